package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/domain"
)

// A repository's row without its git directory: what a node killed
// between a creation's commit and its hook leaves, or a creation whose
// commit's answer was lost. The first authorized git request after the
// hook's time has passed creates the directory, and the repository can be
// pushed to and cloned; a row young enough that its hook may still come
// is left to it (404). A creation whose directory is already there
// adopts it rather than undoing its row.
func TestGitRepoRowWithoutDirectory(t *testing.T) {
	g := startGitCluster(t, 1, 250)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	repos := filepath.Join(g.dir, "repos")
	bare := func(slug string) string { return filepath.Join(repos, gitProject, slug+".git") }

	// A row committed an hour ago whose hook never ran.
	old, err := domain.Open(ctx, domain.Config{URL: filepath.Join(g.dir, dbFileName), BcryptCost: bcrypt.MinCost,
		Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.CreateRepository(ctx, gitProject, domain.NewRepository{Name: "orphan"}); err != nil {
		t.Fatal(err)
	}
	// A row committed just now, its hook perhaps still on its way.
	if _, err := g.db.CreateRepository(ctx, gitProject, domain.NewRepository{Name: "fresh"}); err != nil {
		t.Fatal(err)
	}
	for _, slug := range []string{"orphan", "fresh"} {
		if _, err := os.Lstat(bare(slug)); !os.IsNotExist(err) {
			t.Fatalf("%s: want no directory before the test's requests, got %v", slug, err)
		}
	}

	// The old row: a clone of the empty repository succeeds, then a push
	// and a clone of what it pushed.
	url := g.url(1, "admin", adminPW, "orphan")
	if out, err := g.git("", "clone", "-q", url, filepath.Join(t.TempDir(), "empty")); err != nil {
		t.Fatalf("clone of a row without its directory: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(bare("orphan"), "HEAD")); err != nil {
		t.Fatalf("the git request did not create the missing repository: %v", err)
	}
	work := g.workTree(2)
	g.mustGit(work, "push", "-q", url, "HEAD:refs/heads/main")
	dst := filepath.Join(t.TempDir(), "c")
	g.mustGit("", "clone", "-q", url, dst)
	if got, want := g.mustGit(dst, "rev-parse", "HEAD"), g.mustGit(work, "rev-parse", "HEAD"); got != want {
		t.Fatalf("clone after the push: HEAD %s, want %s", got, want)
	}

	// The young row: not found, and nothing created.
	out, err := g.git("", "clone", "-q", g.url(1, "admin", adminPW, "fresh"), filepath.Join(t.TempDir(), "f"))
	if err == nil || !strings.Contains(out, "404") && !strings.Contains(out, "not found") {
		t.Fatalf("clone of a row young enough for its hook: err %v, want a 404\n%s", err, out)
	}
	if _, err := os.Lstat(bare("fresh")); !os.IsNotExist(err) {
		t.Fatalf("fresh: a row young enough for its hook was healed: %v", err)
	}

	// A creation whose directory is there already keeps its row.
	if err := gitfront.InitBare(ctx, repos, gitProject, "predir"); err != nil {
		t.Fatal(err)
	}
	code, body := g.rest(1, http.MethodPost, "/rest/api/1.0/projects/"+gitProject+"/repos", "admin", adminPW, `{"name":"predir"}`)
	if code != http.StatusCreated {
		t.Fatalf("creating a repository over its existing directory: %d %s", code, body)
	}
	if _, err := g.db.Repository(ctx, gitProject, "predir"); err != nil {
		t.Fatalf("the row of a creation that adopted its directory: %v", err)
	}
	g.mustGit("", "ls-remote", g.url(1, "admin", adminPW, "predir"))
}
