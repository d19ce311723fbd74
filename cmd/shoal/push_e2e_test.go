package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
)

// The push end-to-end tests: a push whose node dies after git moved the
// ref, and a push while the store has no quorum, with real node processes
// and real git clients.

// blockingHook installs hook (post-receive, pre-receive) in PRJ/repo's
// bare repository: while the file block exists it creates the file
// reached and waits for block to go. It returns block and reached.
func (g *gitCluster) blockingHook(repo, hook string) (block, reached string) {
	g.t.Helper()
	dir := g.t.TempDir()
	block, reached = filepath.Join(dir, "block"), filepath.Join(dir, "reached")
	script := "#!/bin/sh\nif [ -e '" + block + "' ]; then\n\t: > '" + reached + "'\n" +
		"\twhile [ -e '" + block + "' ]; do sleep 0.05; done\nfi\n"
	path := filepath.Join(g.dir, "repos", gitProject, repo+".git", "hooks", hook)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		g.t.Fatal(err)
	}
	return block, reached
}

// serverHead is refs/heads/main of PRJ/repo on disk.
func (g *gitCluster) serverHead(repo string) string {
	g.t.Helper()
	return g.mustGit(g.dir, "--git-dir", filepath.Join(g.dir, "repos", gitProject, repo+".git"), "rev-parse", "refs/heads/main")
}

// lsRemote is what node i lists as refs/heads/main of PRJ/app, with
// protocol version v.
func (g *gitCluster) lsRemote(i int, v, url string) string {
	g.t.Helper()
	out := g.mustGit(g.home, "-c", "protocol.version="+v, "ls-remote", url, "refs/heads/main")
	id, _, _ := strings.Cut(out, "\t")
	return id
}

// waitFile polls for path until the deadline.
func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %v", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A push through node 1 with --ref-advert-cache; node 1 is SIGKILLed
// when git has moved the ref (in the post-receive hook), before anything
// after git could run on it. Nodes 2 and 3, whose ref advertisements (v0
// info/refs, v2 ls-refs) and packs were cached before the push, list the
// new commit at once and serve its objects to fetch and clone; so does
// node 1 once restarted; and caching resumes once the dead push's marker
// has expired.
func TestGitClusterPushKilledAfterRefMoved(t *testing.T) {
	g := startGitCluster(t, 3, 200, "--ref-advert-cache")
	g.createRepo("app", false)
	g.user("writer", "wr1ter-Pa55", "app", domain.PermWrite)
	url := func(i int) string { return g.url(i, "writer", "wr1ter-Pa55", "app") }
	work := g.workTree(3)
	old := g.mustGit(work, "rev-parse", "HEAD")
	g.mustGit(work, "push", "-q", url(1), "main")

	// Warm every cache of nodes 2 and 3 with the old refs.
	oldClone := filepath.Join(t.TempDir(), "old")
	g.mustGit(g.home, "clone", "-q", url(2), oldClone)
	for _, i := range []int{2, 3} {
		for range 2 {
			for _, v := range []string{"0", "2"} {
				if got := g.lsRemote(i, v, url(i)); got != old {
					t.Fatalf("node%d v%s lists %s before the push, want %s", i, v, got, old)
				}
			}
			g.clone(cloneVariants[1], url(i), old)
		}
	}
	if s := g.metrics(2)[`shoal_pack_ls_refs_lookups_total{result="hit"}`]; s < 1 {
		t.Fatalf("node2 served no ls-refs from its cache before the push (hits %v): the test proves nothing", s)
	}

	block, reached := g.blockingHook("app", "post-receive")
	if err := os.WriteFile(block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(block) })
	next := g.commit(work, 10)
	push := exec.Command("git", "push", "-q", url(1), "main")
	push.Dir, push.Env = work, gitClientEnv(g.home)
	if err := push.Start(); err != nil {
		t.Fatal(err)
	}
	pushDone := make(chan error, 1)
	go func() { pushDone <- push.Wait() }()
	waitFile(t, reached, time.Minute)
	if got := g.serverHead("app"); got != next {
		t.Fatalf("in post-receive the ref is at %s, want %s", got, next)
	}
	if err := g.c.Kill(1); err != nil {
		t.Fatal(err)
	}
	os.Remove(block)
	select {
	case <-pushDone:
	case <-time.After(time.Minute):
		t.Fatal("the client's push did not end after its node died")
	}

	check := func(when string, nodes ...int) {
		t.Helper()
		for _, i := range nodes {
			for range 2 { // the second could be served from a cache
				for _, v := range []string{"0", "2"} {
					if got := g.lsRemote(i, v, url(i)); got != next {
						t.Fatalf("%s: node%d v%s lists refs/heads/main at %s, want %s", when, i, v, got, next)
					}
				}
			}
			g.clone(cloneVariants[1], url(i), next)
			g.clone(cloneVariants[0], url(i), next)
		}
	}
	check("node1 killed after the ref moved", 2, 3)
	g.mustGit(oldClone, "fetch", "-q", url(3), "main")
	if got := g.mustGit(oldClone, "rev-parse", "FETCH_HEAD"); got != next {
		t.Fatalf("fetch through node3 brought %s, want %s", got, next)
	}
	g.mustGit(oldClone, "fsck", "--no-progress")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.c.Restart(ctx, 1, 2); err != nil {
		t.Fatal(err)
	}
	check("node1 restarted", 1, 2, 3)

	// The dead push's marker must not turn caching off for ever: within
	// its lease (30 s) of being seen, node 2 serves ls-refs from its
	// cache again, and still the new commit.
	before := g.metrics(2)[`shoal_pack_ls_refs_lookups_total{result="hit"}`]
	deadline := time.Now().Add(2 * time.Minute)
	for g.metrics(2)[`shoal_pack_ls_refs_lookups_total{result="hit"}`] == before {
		if time.Now().After(deadline) {
			t.Fatal("node2 never served ls-refs from its cache again after the dead push")
		}
		if got := g.lsRemote(2, "2", url(2)); got != next {
			t.Fatalf("node2 lists %s while the dead push's marker expires, want %s", got, next)
		}
		time.Sleep(500 * time.Millisecond)
	}
	check("the dead push's marker expired", 1, 2, 3)
}

// With two of three nodes dead the store has no quorum: a push through
// the survivor fails within the push guard's deadline (10 s), with the
// reason in git's output, and the ref does not move.
func TestGitClusterPushWithoutQuorumFails(t *testing.T) {
	g := startGitCluster(t, 3, 210)
	g.createRepo("app", false)
	g.user("writer", "wr1ter-Pa55", "app", domain.PermWrite)
	url := g.url(1, "writer", "wr1ter-Pa55", "app")
	work := g.workTree(2)
	old := g.mustGit(work, "rev-parse", "HEAD")
	g.mustGit(work, "push", "-q", url, "main")
	for _, i := range []int{2, 3} {
		if err := g.c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	g.commit(work, 5)
	start := time.Now()
	out, err := g.git(work, "push", url, "main")
	took := time.Since(start)
	if err == nil {
		t.Fatalf("push without quorum succeeded:\n%s", out)
	}
	if took > 45*time.Second {
		t.Errorf("push without quorum took %v to fail", took)
	}
	for _, want := range []string{"remote rejected", "push refused, no ref changed", "store"} {
		if !strings.Contains(out, want) {
			t.Errorf("git's output lacks %q:\n%s", want, out)
		}
	}
	if got := g.serverHead("app"); got != old {
		t.Fatalf("the ref moved to %s without quorum, want %s", got, old)
	}
	t.Logf("push refused after %v:\n%s", took.Round(time.Millisecond), out)
	if m := g.metrics(1)["shoal_git_pushes_refused_total"]; m != 1 {
		t.Errorf("shoal_git_pushes_refused_total = %v, want 1", m)
	}
}
