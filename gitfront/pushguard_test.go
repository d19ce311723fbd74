package gitfront

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/pktline"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/packcache"
)

// testTicket is a PushTicket the test expires and inspects.
type testTicket struct {
	expired chan struct{}
	once    sync.Once
	mu      sync.Mutex
	ended   int
}

func (t *testTicket) Expired() <-chan struct{} { return t.expired }
func (t *testTicket) Cause() error             { return errors.New("test: marker lost") }
func (t *testTicket) expire()                  { t.once.Do(func() { close(t.expired) }) }
func (t *testTicket) End(context.Context) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended++
	return true, nil
}

// testGuard hands out testTickets, or fails with err, or blocks until its
// context ends.
type testGuard struct {
	mu      sync.Mutex
	err     error
	block   bool
	tickets []*testTicket
}

func (g *testGuard) BeginPush(ctx context.Context, repo string) (PushTicket, error) {
	g.mu.Lock()
	err, block := g.err, g.block
	g.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	t := &testTicket{expired: make(chan struct{})}
	g.mu.Lock()
	g.tickets = append(g.tickets, t)
	g.mu.Unlock()
	return t, nil
}

// installHook writes a hook script into proj/repo.
func (w *gitWorld) installHook(repo, hook, script string) {
	w.t.Helper()
	path := filepath.Join(repoDir(w.repos, "proj", repo), "hooks", hook)
	must(w.t, os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755))
}

// TestPushRefusedWithoutGuard: a guard that cannot record the push within
// PushGuardTimeout refuses it before git runs: git's client reports every
// ref rejected with the reason, the ref does not move, OnPush is not
// called and the refusal is counted and logged.
func TestPushRefusedWithoutGuard(t *testing.T) {
	guard := &testGuard{block: true}
	w := newGitWorld(t, func(c *Config) {
		c.Git.PushGuard = guard
		c.Git.PushGuardTimeout = 300 * time.Millisecond
	})
	alice := w.url("alice", "alice-pw-S3cret", "priv")
	src := w.workTree(map[string]string{"a": "1\n"})
	run := func() (string, time.Duration) {
		start := time.Now()
		out, err := w.git(src, "push", alice, "main", "HEAD:refs/heads/other")
		if err == nil {
			t.Fatalf("push succeeded:\n%s", out)
		}
		return out, time.Since(start)
	}
	out, took := run()
	t.Logf("git push refused:\n%s", out)
	for _, want := range []string{"[remote rejected] main -> main", "[remote rejected] HEAD -> other",
		"push refused, no ref changed", "within", "remote: shoal: push refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("git's output lacks %q:\n%s", want, out)
		}
	}
	if took > 30*time.Second {
		t.Errorf("refusal took %v", took)
	}
	if r := w.serverRef("priv", "main"); r != "" {
		t.Fatalf("main moved to %s", r)
	}
	guard.mu.Lock()
	guard.block, guard.err = false, errors.New("test: store down")
	guard.mu.Unlock()
	if out, _ := run(); !strings.Contains(out, "test: store down") {
		t.Errorf("git's output lacks the guard's error:\n%s", out)
	}
	if s := w.front.Stats().Git; s.PushesRefused != 2 || w.pushes.Load() != 0 {
		t.Fatalf("refused %d (want 2), OnPush called %d times (want 0)", s.PushesRefused, w.pushes.Load())
	}
	if !strings.Contains(w.log.String(), "push refused before git ran") {
		t.Errorf("no log line says why:\n%s", w.log.String())
	}
}

// TestPushRefusedWithoutReportStatus: a client that did not ask for
// report-status cannot be told in-band: it gets 503 with the reason.
func TestPushRefusedWithoutReportStatus(t *testing.T) {
	w := newGitWorld(t, func(c *Config) { c.Git.PushGuard = &testGuard{err: errors.New("test: store down")} })
	zero := strings.Repeat("0", 40)
	body := string(pktLine(zero+" "+strings.Repeat("1", 40)+" refs/heads/main\x00ofs-delta\n")) + "0000PACK"
	req, err := http.NewRequest("POST", w.base+"/scm/proj/priv.git/git-receive-pack", strings.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", receiveCT)
	req.SetBasicAuth("alice", "alice-pw-S3cret")
	resp, err := testClient(t).Do(req)
	must(t, err)
	defer resp.Body.Close()
	var msg bytes.Buffer
	msg.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(msg.String(), "test: store down") {
		t.Fatalf("%d %q", resp.StatusCode, msg.String())
	}
}

// TestRefusalReport decodes the in-band refusal as a client would, for
// each side-band setting.
func TestRefusalReport(t *testing.T) {
	updates := []RefUpdate{{Ref: "refs/heads/a"}, {Ref: "refs/heads/b"}}
	long := strings.Repeat("x", 2000) + "\nsecond line"
	for _, caps := range []map[string]bool{
		{"report-status": true},
		{"report-status-v2": true, "side-band-64k": true},
		{"report-status": true, "side-band": true},
	} {
		out := refusalReport(updates, caps, long)
		report := out
		if caps["side-band"] || caps["side-band-64k"] {
			report = demux(t, out)
		}
		var lines []string
		pr := pktline.NewReader(bytes.NewReader(report))
		for {
			typ, p, err := pr.Next()
			must(t, err)
			if typ != pktline.Data {
				break
			}
			lines = append(lines, string(p))
		}
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "unpack x") ||
			!strings.HasPrefix(lines[1], "ng refs/heads/a x") || !strings.HasPrefix(lines[2], "ng refs/heads/b x") {
			t.Fatalf("caps %v: report %q", caps, lines)
		}
		if strings.Count(lines[1], "\n") != 1 || len(lines[1]) > 1000 {
			t.Fatalf("caps %v: a reason line of %d bytes with %d newlines", caps, len(lines[1]), strings.Count(lines[1], "\n"))
		}
	}
}

// demux reassembles band 1 of a side-band stream and checks band 2 holds
// one message.
func demux(t *testing.T, b []byte) []byte {
	t.Helper()
	var band1 []byte
	pr := pktline.NewReader(bytes.NewReader(b))
	for {
		typ, p, err := pr.Next()
		must(t, err)
		if typ == pktline.Flush {
			return band1
		}
		switch p[0] {
		case 1:
			band1 = append(band1, p[1:]...)
		case 2:
		default:
			t.Fatalf("band %d", p[0])
		}
	}
}

// TestPushKilledWhenTicketExpires: when the guard stops vouching while
// git runs (here in the pre-receive hook, the pack in quarantine), git is
// killed, the ref does not move, the ticket is still ended, and the
// quarantine the killed receive-pack left is swept by a later push once
// it is older than QuarantineAge; a fresh one is kept.
func TestPushKilledWhenTicketExpires(t *testing.T) {
	guard := &testGuard{}
	w := newGitWorld(t, func(c *Config) {
		c.Git.PushGuard = guard
		c.Git.QuarantineAge = time.Hour
	})
	dir := repoDir(w.repos, "proj", "priv")
	block := filepath.Join(t.TempDir(), "block")
	reached := filepath.Join(t.TempDir(), "reached")
	w.installHook("priv", "pre-receive", "if [ -e '"+block+"' ]; then : > '"+reached+"'; while [ -e '"+block+"' ]; do sleep 0.05; done; fi\n")
	must(t, os.WriteFile(block, nil, 0o644))
	t.Cleanup(func() { os.Remove(block) })
	alice := w.url("alice", "alice-pw-S3cret", "priv")
	src := w.workTree(map[string]string{"a": "1\n"})
	done := make(chan string, 1)
	go func() {
		out, _ := w.git(src, "push", alice, "main")
		done <- out
	}()
	testkit.Eventually(t, time.Minute, "the pre-receive hook", func() bool {
		_, err := os.Stat(reached)
		return err == nil
	})
	quarantines := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "objects", quarantinePrefix+"*"))
		return m
	}
	if len(quarantines()) != 1 {
		t.Fatalf("quarantines during pre-receive: %v", quarantines())
	}
	guard.mu.Lock()
	ticket := guard.tickets[0]
	guard.mu.Unlock()
	ticket.expire()
	select {
	case out := <-done:
		if strings.Contains(out, "-> main") && !strings.Contains(out, "rejected") && !strings.Contains(out, "error") {
			t.Fatalf("push reported success:\n%s", out)
		}
	case <-time.After(time.Minute):
		t.Fatal("the push did not end after its ticket expired")
	}
	os.Remove(block)
	if r := w.serverRef("priv", "main"); r != "" {
		t.Fatalf("main moved to %s", r)
	}
	if s := w.front.Stats().Git; s.PushesLost != 1 || ticket.ended != 1 {
		t.Fatalf("lost %d (want 1), ended %d (want 1)", s.PushesLost, ticket.ended)
	}
	left := quarantines()
	if len(left) != 1 {
		t.Fatalf("the killed push left quarantines %v, want one", left)
	}

	// A fresh push keeps the young quarantine; once it is old, the next
	// push removes it and keeps a fresh one.
	w.mustGit(src, "push", "-q", alice, "main")
	if q := quarantines(); len(q) != 1 {
		t.Fatalf("a young quarantine was swept: %v", q)
	}
	old := time.Now().Add(-2 * time.Hour)
	must(t, filepath.WalkDir(left[0], func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	}))
	fresh := filepath.Join(dir, "objects", quarantinePrefix+"fresh")
	must(t, os.MkdirAll(filepath.Join(fresh, "pack"), 0o755))
	w.commit(src, map[string]string{"a": "2\n"})
	w.mustGit(src, "push", "-q", alice, "main")
	if q := quarantines(); len(q) != 1 || q[0] != fresh {
		t.Fatalf("quarantines after the sweep: %v, want only %s", q, fresh)
	}
	if s := w.front.Stats().Git; s.QuarantinesSwept != 1 {
		t.Fatalf("swept %d, want 1", s.QuarantinesSwept)
	}
}

// TestPushCrashThroughFronts wires two fronts over one repositories
// directory the way nodes do, each with its own pack cache (ls-refs and
// the info/refs advertisement cached) and generations in one shared
// store. A push through front A moves the ref and A "crashes" right
// after git (no End, no OnPush; its store handle fails). Front B lists
// and serves the new commit at once, for both protocols.
func TestPushCrashThroughFronts(t *testing.T) {
	shared := &packcache.MemStore{}
	aStore := &switchStore{Store: shared}
	type node struct {
		w  *gitWorld
		pc *packcache.Cache
	}
	var repos string
	newNode := func(st packcache.Store, name string) node {
		gens, err := packcache.NewStoreGenerations(packcache.StoreGenerationsConfig{
			Store: st, Node: name, PushLease: 2 * time.Second, Logger: testkit.Logger(t)})
		must(t, err)
		cfg := packcache.DefaultConfig(t.TempDir())
		cfg.MinFree, cfg.LsRefs, cfg.Generations, cfg.Logger = 0, true, gens, testkit.Logger(t)
		pc, err := packcache.New(cfg)
		must(t, err)
		t.Cleanup(func() { _ = pc.Close() })
		w := newGitWorld(t, func(c *Config) {
			if repos != "" {
				c.Git.ReposDir = repos
			}
			c.Git.UploadPacker = packCacheUploader(pc)
			c.Git.AdvertGenerations = gens
			c.Git.PushGuard = PushGuardFunc(func(ctx context.Context, repo string) (PushTicket, error) {
				p, err := pc.BeginPush(ctx, repo)
				if err != nil {
					return nil, err
				}
				return p, nil
			})
		})
		repos = w.front.Git().cfg.ReposDir
		w.repos = repos
		return node{w, pc}
	}
	a := newNode(aStore, "a")
	b := newNode(shared, "b")
	alice := func(n node) string { return n.w.url("alice", "alice-pw-S3cret", "priv") }
	src := a.w.workTree(map[string]string{"a": "1\n"})
	a.w.mustGit(src, "push", "-q", alice(a), "main")
	old := a.w.serverRef("priv", "main")
	mainAt := func(v string) string {
		out := b.w.mustGit("", "-c", "protocol.version="+v, "ls-remote", alice(b), "refs/heads/main")
		id, _, _ := strings.Cut(out, "\t")
		return id
	}
	for range 2 {
		for _, v := range []string{"0", "2"} {
			if got := mainAt(v); got != old {
				t.Fatalf("B v%s lists %s, want %s", v, got, old)
			}
		}
	}
	if s, g := b.pc.Stats(), b.w.front.Stats().Git; s.LsRefsHits == 0 || g.AdvertHits == 0 {
		t.Fatalf("B cached nothing before the push: %+v %+v", s, g)
	}
	pushes := a.w.pushes.Load()
	crash := func(string) bool { aStore.kill(); return true }
	a.w.front.Git().hookAfterReceive.Store(&crash)
	next := a.w.commit(src, map[string]string{"a": "2\n"})
	if out, err := a.w.git(src, "push", alice(a), "main"); err == nil {
		t.Logf("the client's push through the crashing front: %s", out)
	}
	if got := a.w.serverRef("priv", "main"); got != next {
		t.Fatalf("the ref is at %s after the crash, want %s", got, next)
	}
	for range 2 {
		for _, v := range []string{"0", "2"} {
			if got := mainAt(v); got != next {
				t.Fatalf("B v%s lists %s after A crashed, want %s", v, got, next)
			}
		}
	}
	dst := filepath.Join(t.TempDir(), "c")
	b.w.mustGit("", "clone", "-q", alice(b), dst)
	b.w.mustGit(dst, "fsck", "--no-progress")
	if got := b.w.mustGit(dst, "rev-parse", "HEAD"); got != next {
		t.Fatalf("clone through B has %s, want %s", got, next)
	}
	if a.w.pushes.Load() != pushes {
		t.Fatal("OnPush ran on the crashed front")
	}
}

// switchStore is a Store handle that dies on kill (every call fails),
// as a crashed node's would.
type switchStore struct {
	packcache.Store
	mu   sync.Mutex
	dead bool
}

func (s *switchStore) kill() { s.mu.Lock(); s.dead = true; s.mu.Unlock() }

func (s *switchStore) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return errors.New("test: crashed")
	}
	return nil
}

func (s *switchStore) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := s.err(); err != nil {
		return nil, 0, err
	}
	return s.Store.Get(ctx, key)
}

func (s *switchStore) CompareAndSet(ctx context.Context, key string, expect uint64, v []byte) (uint64, error) {
	if err := s.err(); err != nil {
		return 0, err
	}
	return s.Store.CompareAndSet(ctx, key, expect, v)
}
