package gitfront

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestValidName(t *testing.T) {
	good := []string{"a", "repo", "Repo_1.2-x", "a.b", strings.Repeat("x", 128), "git", "x.gitx"}
	bad := []string{"", ".", "..", ".hidden", "-rf", "--upload-pack=x", "a/b", `a\b`, "a b",
		"r.git", "r.lock", "é", "a\x00b", "a:b", "a%2fb", strings.Repeat("x", 129)}
	for _, n := range good {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q): %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidName(n); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q): %v, want ErrBadName", n, err)
		}
	}
}

func TestInitBare(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if err := InitBare(ctx, dir, "proj", "r"); err != nil {
		t.Fatal(err)
	}
	if !isBareRepo(filepath.Join(dir, "proj", "r.git")) {
		t.Fatal("InitBare did not make a bare repository")
	}
	if err := InitBare(ctx, dir, "proj", "r"); !errors.Is(err, ErrExists) {
		t.Fatalf("second InitBare: %v, want ErrExists", err)
	}
	if err := InitBare(ctx, dir, "proj", "../x"); !errors.Is(err, ErrBadName) {
		t.Fatalf("InitBare with a bad name: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "proj"))
	if len(entries) != 1 {
		t.Fatalf("proj holds %d entries, want only r.git (no temporary left)", len(entries))
	}
}

// TestInitBareRace: of concurrent creators of one repository exactly one
// wins.
func TestInitBareRace(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = InitBare(context.Background(), dir, "p", "r") })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrExists):
			t.Errorf("InitBare: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creators won, want 1", won)
	}
}

// TestResolveRepo: symlinks inside the root are followed, ones leading
// out are refused, missing or non-repository directories are not found.
func TestResolveRepo(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	root, _ = filepath.EvalSymlinks(root)
	ctx := context.Background()
	for _, r := range []string{"real"} {
		if err := InitBare(ctx, root, "p", r); err != nil {
			t.Fatal(err)
		}
	}
	if err := InitBare(ctx, outside, "p", "secret"); err != nil {
		t.Fatal(err)
	}
	must(t, os.Symlink(filepath.Join(root, "p", "real.git"), filepath.Join(root, "p", "alias.git")))
	must(t, os.Symlink(filepath.Join(outside, "p", "secret.git"), filepath.Join(root, "p", "escape.git")))
	must(t, os.Symlink(filepath.Join(outside, "p"), filepath.Join(root, "q")))
	must(t, os.MkdirAll(filepath.Join(root, "p", "empty.git"), 0o755))
	for _, tc := range []struct {
		project, repo string
		want          error
	}{
		{"p", "real", nil}, {"p", "alias", nil},
		{"p", "escape", ErrBadName}, {"q", "secret", ErrBadName},
		{"p", "missing", ErrNotFound}, {"p", "empty", ErrNotFound},
		{"..", "x", ErrBadName}, {"p", "-x", ErrBadName},
	} {
		_, err := resolveRepo(root, tc.project, tc.repo)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("resolveRepo(%s/%s): %v, want %v", tc.project, tc.repo, err, tc.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewGitHandlerConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if _, err := NewGitHandler(GitConfig{ReposDir: dir, Authorizer: AuthorizerFunc(allowAll)}); err != nil {
		t.Fatalf("missing ReposDir not created: %v", err)
	}
	for _, c := range []GitConfig{{ReposDir: dir}, {Authorizer: AuthorizerFunc(allowAll)}} {
		if _, err := NewGitHandler(c); !errors.Is(err, ErrConfig) {
			t.Errorf("NewGitHandler(%+v): %v, want ErrConfig", c, err)
		}
	}
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Errorf("New without Web and Authenticator: %v", err)
	}
}
