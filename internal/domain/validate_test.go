package domain

import (
	"os/exec"
	"strings"
	"testing"
)

func TestSlugify(t *testing.T) {
	for in, want := range map[string]string{
		"My Web App!": "my-web-app", "  spaces  ": "spaces", "dots..and.git": "dots.and",
		"Ünïcode name": "n-code-name", "../../etc/passwd": "etc-passwd", "repo.lock": "repo", "x_y": "x_y",
	} {
		got := Slugify(in)
		if got != want || !ValidSlug(got) {
			t.Errorf("Slugify(%q) = %q (valid %v), want %q", in, got, ValidSlug(got), want)
		}
	}
}

// ValidBranchName agrees with git check-ref-format on names around each
// of git's rules.
func TestValidBranchNameAgreesWithGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	for _, name := range []string{"main", "feature/x", "release-1.0", "a.b", "v1@2", "UPPER_case", "ü", "a/b/c",
		"", "@", "-x", "a..b", "a//b", "/a", "a/", "a.", ".a", "a/.b", "a.lock", "a.lock/b", "a b", "a~1", "a^", "a:b",
		"a?", "a*", "a[", "a\\b", "a@{1}", "a\x01", "a\x7f", strings.Repeat("x", 255), strings.Repeat("x", 256)} {
		want := exec.Command("git", "check-ref-format", "refs/heads/"+name).Run() == nil && !strings.HasPrefix(name, "-") && len(name) <= 255
		if got := ValidBranchName(name); got != want {
			t.Errorf("ValidBranchName(%q) = %v, git says %v", name, got, want)
		}
	}
}
