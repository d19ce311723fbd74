package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/packcache"
)

// BenchmarkPushGuard measures what recording a push in the store before
// and after git costs a push, against the single write after git that
// pushes made before (the generation bumped by a Put in OnPush). Two
// fronts share one node's real raft store (one voter: each write is a
// log append with fsync, as on a cluster less the round trip to the
// followers) and each serves its own repository; every iteration pushes
// a new commit with a real git client through each, alternately, so both
// arms see the same machine. It reports each arm's median push and their
// ratio, and the median of the store operations alone.
//
//	go test -run '^$' -bench BenchmarkPushGuard -benchtime 40x ./internal/server
func BenchmarkPushGuard(b *testing.B) {
	if _, err := exec.LookPath("git"); err != nil {
		b.Skip("git is not installed")
	}
	s := benchNode(b)
	st := cpStore{s.Store()}
	repos := b.TempDir()
	before := benchFront(b, repos, st, false)
	after := benchFront(b, repos, st, true)
	for _, r := range []string{"before", "after"} {
		if err := gitfront.InitBare(context.Background(), repos, "p", r); err != nil {
			b.Fatal(err)
		}
	}
	work := b.TempDir()
	benchGit(b, work, "init", "-q", "-b", "main")
	var pushBefore, pushAfter testkit.Latencies
	push := func(url string, into *testkit.Latencies) {
		start := time.Now()
		benchGit(b, work, "push", "-q", url, "main")
		*into = append(*into, time.Since(start))
	}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if err := os.WriteFile(filepath.Join(work, "f"), fmt.Appendf(nil, "%d\n", i), 0o644); err != nil {
			b.Fatal(err)
		}
		benchGit(b, work, "add", "f")
		benchGit(b, work, "commit", "-q", "-m", fmt.Sprint(i))
		b.StartTimer()
		if i%2 == 0 { // alternate which arm goes first
			push(before.URL+"/scm/p/before.git", &pushBefore)
			push(after.URL+"/scm/p/after.git", &pushAfter)
		} else {
			push(after.URL+"/scm/p/after.git", &pushAfter)
			push(before.URL+"/scm/p/before.git", &pushBefore)
		}
	}
	b.StopTimer()
	p50b, p50a := pushBefore.Quantile(0.5), pushAfter.Quantile(0.5)
	b.ReportMetric(float64(p50b.Microseconds())/1e3, "before-p50-ms")
	b.ReportMetric(float64(p50a.Microseconds())/1e3, "after-p50-ms")
	b.ReportMetric(float64(p50a)/float64(p50b), "after/before")
	benchStoreOps(b, st)
}

// benchStoreOps reports the median of the store work alone: the old Put,
// and BeginPush with End.
func benchStoreOps(b *testing.B, st cpStore) {
	ctx := context.Background()
	gens, err := packcache.NewStoreGenerations(packcache.StoreGenerationsConfig{Store: st, Node: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	var put, guard testkit.Latencies
	for range 50 {
		start := time.Now()
		if _, err := st.st.Put(ctx, "packcache/gen/p/old", []byte{1}); err != nil {
			b.Fatal(err)
		}
		put = append(put, time.Since(start))
		start = time.Now()
		p, err := gens.BeginPush(ctx, "p/new")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.End(ctx); err != nil {
			b.Fatal(err)
		}
		guard = append(guard, time.Since(start))
	}
	b.ReportMetric(float64(put.Quantile(0.5).Microseconds())/1e3, "put-p50-ms")
	b.ReportMetric(float64(guard.Quantile(0.5).Microseconds())/1e3, "begin+end-p50-ms")
}

// benchFront serves repos with git smart HTTP and a pack cache whose
// generations live in st: guarded (BeginPush and End around git) or the
// way pushes were recorded before (one Put after git).
func benchFront(b *testing.B, repos string, st cpStore, guarded bool) *httptest.Server {
	gens, err := packcache.NewStoreGenerations(packcache.StoreGenerationsConfig{Store: st, Node: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	cfg := packcache.DefaultConfig(b.TempDir())
	cfg.MinFree, cfg.Generations = 0, gens
	pc, err := packcache.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	gc := gitfront.GitConfig{ReposDir: repos, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Authorizer: gitfront.AuthorizerFunc(func(context.Context, gitfront.Principal, string, string, gitfront.Action) error { return nil })}
	if guarded {
		gc.PushGuard = gitfront.PushGuardFunc(func(ctx context.Context, repo string) (gitfront.PushTicket, error) {
			p, err := pc.BeginPush(ctx, repo)
			if err != nil {
				return nil, err
			}
			return p, nil
		})
	} else {
		gc.OnPush = func(ctx context.Context, project, repo string) {
			name := gitfront.RepoName(project, repo)
			if _, err := st.st.Put(ctx, "packcache/gen/"+name, []byte{1}); err != nil {
				b.Error(err)
			}
			pc.Forget(name)
		}
	}
	h, err := gitfront.NewGitHandler(gc)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv
}

// benchNode starts a one-node server with its own raft group.
func benchNode(b *testing.B) *Server {
	cc := *cluster.DefaultLoopbackConfig()
	cc.Name = "bench"
	s, err := Start(Config{
		Cluster: cc, HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", DataDir: b.TempDir(),
		Store:  cp.Config{BootstrapExpect: 1, Raft: cp.LoopbackRaftConfig()},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	deadline := time.Now().Add(30 * time.Second)
	for s.Store().Status().Role != "leader" {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// benchGit runs a git client in dir with an identity and no machine
// configuration.
func benchGit(b *testing.B, dir string, args ...string) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir,
		"GIT_AUTHOR_NAME=B", "GIT_AUTHOR_EMAIL=b@example.com", "GIT_COMMITTER_NAME=B", "GIT_COMMITTER_EMAIL=b@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("git %v: %v\n%s", args, err, out)
	}
}
