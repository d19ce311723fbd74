package domain

import "testing"

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
