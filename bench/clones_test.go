package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestClonesOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		o    ClonesOptions
		want string
	}{
		{"no binary", ClonesOptions{Dir: "d"}, "Binary and Dir"},
		{"nodes", ClonesOptions{Binary: "b", Dir: "d", Nodes: 10}, "10 nodes"},
		{"clones", ClonesOptions{Binary: "b", Dir: "d", Clones: -1}, "concurrent clones"},
		{"depth", ClonesOptions{Binary: "b", Dir: "d", Depth: -1}, "depth -1"},
		{"protocol", ClonesOptions{Binary: "b", Dir: "d", Protocol: "3"}, "protocol"},
		{"mode", ClonesOptions{Binary: "b", Dir: "d", Modes: []string{"hot"}}, "unknown mode"},
		{"twice", ClonesOptions{Binary: "b", Dir: "d", Modes: []string{"off", "off"}}, "twice"},
		{"warm alone", ClonesOptions{Binary: "b", Dir: "d", Modes: []string{"warm"}}, "warm needs cold"},
		{"repo", ClonesOptions{Binary: "b", Dir: "d", Repo: RepoSize{Files: 0, Commits: 3}}, "out of range"},
	} {
		err := c.o.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", c.name, err, c.want)
		}
	}
	o := ClonesOptions{Binary: "b", Dir: "d"}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if o.Nodes != 1 || o.Clones != 16 || o.Protocol != "2" || o.Repo != DefaultRepoSize || len(o.Modes) != 4 {
		t.Errorf("defaults: %+v", o)
	}
}

// The generated repository has the history asked for, and the baseline
// server serves it to a real git client.
func TestGenerateRepoAndServeBaseline(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := t.TempDir()
	repo := filepath.Join(root, "P", "r.git")
	if err := GenerateRepo(ctx, repo, RepoSize{Files: 20, Commits: 6, Changed: 3}); err != nil {
		t.Fatal(err)
	}
	if n, err := gitOut(ctx, repo, "rev-list", "--count", "main"); err != nil || n != "6" {
		t.Fatalf("commits: %q %v", n, err)
	}
	if err := GenerateRepo(ctx, repo, RepoSize{Files: 20, Commits: 6, Changed: 3}); err != nil {
		t.Fatalf("regenerating over a complete repository: %v", err)
	}
	ready := filepath.Join(t.TempDir(), "addr")
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- ServeBaseline(sctx, root, "127.0.0.1:0", ready) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		if b, err := os.ReadFile(ready); err == nil {
			addr = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatal("the baseline server did not start")
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	head, _ := gitOut(ctx, repo, "rev-parse", "HEAD")
	o := &ClonesOptions{Protocol: "2"}
	dst := filepath.Join(t.TempDir(), "c.git")
	if _, cpu, err := cloneOnce(ctx, o, t.TempDir(), "http://"+addr+"/scm/P/r.git", dst); err != nil || cpu <= 0 {
		t.Fatalf("clone: %v (CPU %v s)", err, cpu)
	}
	if err := checkClone(ctx, dst, head); err != nil {
		t.Fatal(err)
	}
	if packBytes(dst) == 0 {
		t.Error("the clone has no pack")
	}
}

func TestProcReaders(t *testing.T) {
	// Burn a little CPU so that the counters move.
	deadline := time.Now().Add(30 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	c, err := readProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if c.self <= 0 {
		t.Errorf("own CPU %v", c.self)
	}
	if m := treePSS([]int{os.Getpid()}); m < 1<<20 {
		t.Errorf("tree PSS %d", m)
	}
	if _, err := readProcCPU(1 << 30); err == nil {
		t.Error("CPU of a process that does not exist")
	}
}
