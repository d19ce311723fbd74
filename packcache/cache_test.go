package packcache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const v0caps = " side-band-64k ofs-delta thin-pack no-progress agent=git/2.39.5"

// v0Clone is a v0 clone request for the given wants.
func v0Clone(caps string, wants ...string) []byte {
	lines := []string{"want " + wants[0] + caps}
	for _, w := range wants[1:] {
		lines = append(lines, "want "+w)
	}
	return pkts(append(lines, "", "done")...)
}

// gate makes a cache's producer stop after its first write until the test
// opens the gate (or the cache closes).
type gate struct {
	blocked chan struct{} // closed when the producer is stopped
	open    chan struct{}
	once    sync.Once
}

func blockFirstWrite(c *Cache) *gate {
	g := &gate{blocked: make(chan struct{}), open: make(chan struct{})}
	c.hookWrite = func(e *entry, n int64, cmd *exec.Cmd) {
		g.once.Do(func() {
			close(g.blocked)
			select {
			case <-g.open:
			case <-c.base.Done():
			}
		})
	}
	return g
}

func (g *gate) wait(t *testing.T) {
	t.Helper()
	select {
	case <-g.blocked:
	case <-time.After(30 * time.Second):
		t.Fatal("producer never wrote")
	}
}

// TestConcurrentClones runs 50 identical clones while the one git process
// is held after its first write: every clone but the first joins the
// growing file, and all get a correct repository.
func TestConcurrentClones(t *testing.T) {
	r := newRepo(t, 8)
	c := newCache(t, Config{})
	g := blockFirstWrite(c)
	s := newServer(t, c, map[string]string{"r": r.bare}, false)
	want := objects(t, clone(t, newServer(t, nil, s.repos, true).url("r"), "-c", "protocol.version=0"))
	const n = 50
	dirs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	base := t.TempDir()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i] = filepath.Join(base, "c"+string(rune('a'+i%26))+string(rune('a'+i/26)))
			out, err := cloneErr(s.url("r"), dirs[i], "-c", "protocol.version=0")
			if err != nil {
				errs[i] = errors.New(out)
			}
		}()
	}
	g.wait(t)
	waitFor(t, "49 joined", func() bool { st := c.Stats(); return st.Misses == 1 && st.Joined == n-1 })
	close(g.open)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
	}
	for _, d := range []string{dirs[0], dirs[n/2], dirs[n-1]} {
		if got := objects(t, d); !equalStrings(got, want) {
			t.Fatalf("clone %s differs from git's", d)
		}
	}
	if st := c.Stats(); st.GitStarted != 1 || st.Published != 1 || st.Bypasses != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func equalStrings(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// TestPushBetweenClones: after a push and Invalidate the next clone misses
// and sees the new commit; after a force-push removing a tip, a v0
// request for it gets git's own error, not the old pack.
func TestPushBetweenClones(t *testing.T) {
	r := newRepo(t, 4)
	c := newCache(t, Config{})
	s := newServer(t, c, map[string]string{"r": r.bare}, false)
	opts := []string{"-c", "protocol.version=0"}
	old := run(t, r.bare, "rev-parse", "main")
	clone(t, s.url("r"), opts...)
	clone(t, s.url("r"), opts...)
	head := r.push(t, "new")
	if err := c.Invalidate(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	dir := clone(t, s.url("r"), opts...)
	if got := run(t, dir, "rev-parse", "main"); got != head {
		t.Fatalf("clone after push has main at %s, want %s", got, head)
	}
	if st := c.Stats(); st.Misses != 2 || st.Hits != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
	stale := s.lastPost(t) // wants the pushed commit
	run(t, r.work, "push", "-q", "-f", "origin", old+":main")
	run(t, r.work, "reflog", "expire", "--expire=now", "--all")
	if err := c.Invalidate(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	out, res, err := serve(t, c, "r", r.bare, stale.protocol, stale.body)
	if res != Miss || !errors.Is(err, ErrGit) || !bytes.Contains(out, []byte("not our ref")) {
		t.Fatalf("request for a removed tip: %v %v %q", res, err, out)
	}
	if got := run(t, clone(t, s.url("r"), opts...), "rev-parse", "main"); got != old {
		t.Fatalf("clone after the force-push has main at %s, want %s", got, old)
	}
	if st := c.Stats(); st.Published != 3 || st.Failed != 1 || st.Misses != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPushDuringProduction: an Invalidate while git writes the entry keeps
// it from being published; its reader gets ErrInvalidated after all the
// bytes, and the next request produces a fresh entry.
func TestPushDuringProduction(t *testing.T) {
	r := newRepo(t, 8)
	c := newCache(t, Config{})
	g := blockFirstWrite(c)
	body := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	type result struct {
		out []byte
		err error
	}
	done := make(chan result)
	go func() {
		var out bytes.Buffer
		_, err := c.ServeUploadPack(context.Background(), &out, "r", r.bare, "", bytes.NewReader(body))
		done <- result{out.Bytes(), err}
	}()
	g.wait(t)
	r.push(t, "during")
	if err := c.Invalidate(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	close(g.open)
	res := <-done
	if !errors.Is(res.err, ErrInvalidated) {
		t.Fatalf("err = %v, want ErrInvalidated", res.err)
	}
	if err := completeResponse(0, res.out); err != nil {
		t.Fatalf("reader did not get git's whole response: %v", err)
	}
	waitFor(t, "the file removed", func() bool { return countFiles(t, c.cfg.Dir) == 0 })
	if _, res, err := serve(t, c, "r", r.bare, "", body); res != Miss || err != nil {
		t.Fatalf("next request: %v %v", res, err)
	}
	if st := c.Stats(); st.Published != 1 || st.Failed != 1 || st.Misses != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// newChecker returns a checker for a response of the given protocol
// version; version 3 stands for a v2 ls-refs response.
func newChecker(version int) *checker {
	if version == 3 {
		return &checker{version: 2, lsRefs: true}
	}
	return &checker{version: version}
}

func completeResponse(version int, out []byte) error {
	chk := newChecker(version)
	chk.feed(out)
	return chk.result()
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, filePrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// TestGitFailures: git killed mid-stream, a non-zero exit with ERR, a
// band-3 abort: the reader gets an error, nothing is published, and the
// next request runs git again.
func TestGitFailures(t *testing.T) {
	r := newRepo(t, 8)
	head := run(t, r.bare, "rev-parse", "main")
	t.Run("killed", func(t *testing.T) {
		c := newCache(t, Config{})
		var killed atomic.Bool
		c.hookWrite = func(e *entry, n int64, cmd *exec.Cmd) {
			if killed.CompareAndSwap(false, true) {
				_ = cmd.Process.Kill()
			}
		}
		failOnce(t, c, r.bare, v0Clone(v0caps, head), ErrGit, true)
	})
	t.Run("ERR", func(t *testing.T) {
		c := newCache(t, Config{})
		failOnce(t, c, r.bare, v0Clone(v0caps, strings.Repeat("ab", 20)), ErrGit, false)
	})
	t.Run("band3", func(t *testing.T) {
		bad := corruptCopy(t, r)
		c := newCache(t, Config{})
		failOnce(t, c, bad, v0Clone(v0caps, head), ErrGit, false)
		out, _, _ := serve(t, c, "r", bad, "", v0Clone(v0caps, head))
		if err := completeResponse(0, out); err == nil || !strings.Contains(err.Error(), "side-band 3") {
			t.Fatalf("checker on a band-3 response: %v", err)
		}
	})
}

// failOnce serves body, expects err, and checks nothing was published; if
// recovers, a second request must publish.
func failOnce(t *testing.T, c *Cache, path string, body []byte, want error, recovers bool) {
	t.Helper()
	_, res, err := serve(t, c, "r", path, "", body)
	if res != Miss || !errors.Is(err, want) {
		t.Fatalf("got %v, %v; want a miss failing with %v", res, err, want)
	}
	waitFor(t, "the file removed", func() bool { return countFiles(t, c.cfg.Dir) == 0 })
	if st := c.Stats(); st.Published != 0 || st.Failed != 1 || st.Entries != 0 {
		t.Fatalf("stats %+v", st)
	}
	_, res, err = serve(t, c, "r", path, "", body)
	if res != Miss || (err == nil) != recovers {
		t.Fatalf("second request: %v, %v", res, err)
	}
}

// corruptCopy copies the repository's objects, loose, minus one blob.
func corruptCopy(t *testing.T, r *repo) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bad.git")
	run(t, "", "init", "-q", "--bare", dir)
	pack := exec.Command("git", "-C", r.bare, "pack-objects", "--all", "--revs", "--stdout", "-q")
	unpack := exec.Command("git", "-C", dir, "unpack-objects", "-q")
	var err error
	if unpack.Stdin, err = pack.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := pack.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := unpack.CombinedOutput(); err != nil {
		t.Fatalf("unpack-objects: %v %s", err, out)
	}
	if err := pack.Wait(); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "update-ref", "refs/heads/main", run(t, r.bare, "rev-parse", "main"))
	blob := run(t, r.bare, "rev-parse", "main:dir0/file0.bin")
	if err := os.Remove(filepath.Join(dir, "objects", blob[:2], blob[2:])); err != nil {
		t.Fatal(err)
	}
	return dir
}
