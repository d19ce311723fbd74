package packcache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestKeyMatrix serves variants of one request through the cache: each
// setting that changes the response makes its own entry; agent,
// session-id and duplicate wants do not.
func TestKeyMatrix(t *testing.T) {
	r := newRepo(t, 6)
	c := newCache(t, Config{})
	head := run(t, r.bare, "rev-parse", "main")
	parent := run(t, r.bare, "rev-parse", "main~2")
	const base = " side-band-64k ofs-delta thin-pack"
	v0 := func(caps string, extra ...string) []byte {
		return pkts(append(append([]string{"want " + head + caps}, extra...), "", "done")...)
	}
	v2 := pkts("command=fetch", "agent=git/2.39.5", "object-format=sha1", "|", "ofs-delta", "thin-pack", "want "+head, "done", "")
	distinct := []struct {
		name, repo, proto string
		body              []byte
	}{
		{"base", "r", "", v0(base + " agent=git/2.39.5")},
		{"depth", "r", "", v0(base, "deepen 1")},
		{"depth2", "r", "", v0(base, "deepen 2")},
		{"shallow", "r", "", v0(base, "shallow "+parent)},
		{"filter", "r", "", v0(base+" filter", "filter blob:none")},
		{"include-tag", "r", "", v0(base + " include-tag")},
		{"no ofs-delta", "r", "", v0(" side-band-64k thin-pack")},
		{"side-band", "r", "", v0(" side-band ofs-delta thin-pack")},
		{"no-progress", "r", "", v0(base + " no-progress")},
		{"version 1", "r", "version=1", v0(base)},
		{"version 2", "r", "version=2", v2},
		{"repository", "other", "", v0(base)},
	}
	same := []struct {
		name string
		body []byte
	}{
		{"agent", v0(base + " agent=other/1.0")},
		{"session-id", v0(base + " session-id=abc")},
		{"duplicate wants", v0(base, "want "+head)},
		{"blob:none again", v0(base+" filter agent=x", "filter blob:none")},
	}
	for _, d := range distinct {
		if _, res, err := serve(t, c, d.repo, r.bare, d.proto, d.body); res != Miss || err != nil {
			t.Fatalf("%s: %v %v, want a miss", d.name, res, err)
		}
	}
	for _, s := range same {
		if _, res, err := serve(t, c, "r", r.bare, "", s.body); res != Hit || err != nil {
			t.Fatalf("%s: %v %v, want a hit", s.name, res, err)
		}
	}
	if st := c.Stats(); st.Entries != len(distinct) || st.GitStarted != uint64(len(distinct)) {
		t.Fatalf("stats %+v", st)
	}
}

// entrySizes returns the response sizes of the bodies, from git.
func entrySizes(t *testing.T, path string, bodies ...[]byte) []int64 {
	c := newCache(t, Config{})
	var sizes []int64
	for _, b := range bodies {
		out, _, err := serve(t, c, "r", path, "", b)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, int64(len(out)))
	}
	return sizes
}

// TestEvictionOrder fills a budget that holds two of three entries: the
// least recently read goes.
func TestEvictionOrder(t *testing.T) {
	r := newRepo(t, 6)
	a := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	b := v0Clone(v0caps, run(t, r.bare, "rev-parse", "side"))
	cc := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main~1"))
	sizes := entrySizes(t, r.bare, a, b, cc)
	// Room for a and cc but not b as well, with margin for git's
	// run-to-run variation in the responses' lengths.
	c := newCache(t, Config{MaxBytes: sizes[0] + sizes[2] + sizes[1]/2})
	for _, step := range []struct {
		body []byte
		want Result
	}{{a, Miss}, {b, Miss}, {a, Hit}, {cc, Miss}, {a, Hit}, {cc, Hit}, {b, Miss}} {
		if _, res, err := serve(t, c, "r", r.bare, "", step.body); res != step.want || err != nil {
			t.Fatalf("got %v %v, want %v (stats %+v)", res, err, step.want, c.Stats())
		}
	}
	if st := c.Stats(); st.Evictions != 2 || st.Bytes > c.cfg.MaxBytes {
		t.Fatalf("stats %+v", st)
	}
}

// TestReaderSurvivesEviction opens a hit, evicts its entry, and still
// reads the whole file; the file goes when the reader closes.
func TestReaderSurvivesEviction(t *testing.T) {
	r := newRepo(t, 6)
	c := newCache(t, Config{})
	body := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	want, _, err := serve(t, c, "r", r.bare, "", body)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := c.Open(ctx, "r", r.bare, "", bytes.NewReader(body))
	if err != nil || resp.Result != Hit {
		t.Fatalf("%v %v", resp, err)
	}
	if n := c.Forget("r"); n != 1 {
		t.Fatalf("Forget dropped %d", n)
	}
	if countFiles(t, c.cfg.Dir) != 1 {
		t.Fatal("file removed while a reader holds it")
	}
	var out bytes.Buffer
	if _, err := resp.Stream(ctx, &out); err != nil || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("stream after eviction: %v, %d bytes of %d", err, out.Len(), len(want))
	}
	resp.Close()
	resp.Close()
	if countFiles(t, c.cfg.Dir) != 0 {
		t.Fatal("file left after its last reader closed")
	}
}

// TestOrphansSweptAtStart: files a crashed process left are removed by
// New; other files in the directory are not.
func TestOrphansSweptAtStart(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"pc-0123-1", "pc-abcd-7", "keep.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	newCache(t, Config{Dir: dir})
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(names) != 1 || filepath.Base(names[0]) != "keep.txt" {
		t.Fatalf("left %v", names)
	}
}

// TestFreeSpaceFloor: below the floor the request bypasses and succeeds,
// and Sweep evicts entries.
func TestFreeSpaceFloor(t *testing.T) {
	r := newRepo(t, 4)
	body := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	c := newCache(t, Config{MinFree: 1 << 62})
	out, res, err := serve(t, c, "r", r.bare, "", body)
	if res != Bypass || err != nil || completeResponse(0, out) != nil {
		t.Fatalf("below the floor: %v %v", res, err)
	}
	if st := c.Stats(); st.Bypasses != 1 || st.Misses != 0 || countFiles(t, c.cfg.Dir) != 0 {
		t.Fatalf("stats %+v", st)
	}
	c2 := newCache(t, Config{})
	if _, res, _ := serve(t, c2, "r", r.bare, "", body); res != Miss {
		t.Fatalf("got %v", res)
	}
	c2.cfg.MinFree = 1 << 62 // as if the disk had filled up
	if n, err := c2.Sweep(context.Background()); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// TestTTL: an expired entry is a miss; Sweep drops expired entries.
func TestTTL(t *testing.T) {
	r := newRepo(t, 4)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	c := newCache(t, Config{TTL: time.Minute, Clock: clock.Now})
	a := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	b := v0Clone(v0caps, run(t, r.bare, "rev-parse", "side"))
	for _, step := range []struct {
		body    []byte
		advance time.Duration
		want    Result
	}{{a, 0, Miss}, {a, 59 * time.Second, Hit}, {a, time.Second, Miss}, {b, 0, Miss}} {
		clock.Add(step.advance)
		if _, res, err := serve(t, c, "r", r.bare, "", step.body); res != step.want || err != nil {
			t.Fatalf("got %v %v, want %v", res, err, step.want)
		}
	}
	clock.Add(time.Minute)
	if n, err := c.Sweep(context.Background()); n != 2 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if st := c.Stats(); st.Expired != 3 || st.Entries != 0 || countFiles(t, c.cfg.Dir) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSweepAfterRead: once a clone has been read to its end, the entry is
// held by no one, so a Sweep that drops it removes its file at once, even
// while the producing goroutine has not yet returned from waking its
// readers. (It used to drop its reference after waking them: a Sweep in
// between left the file to that late release, and TestTTL failed on a
// loaded machine.)
func TestSweepAfterRead(t *testing.T) {
	r := newRepo(t, 4)
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	c := newCache(t, Config{TTL: time.Minute, Clock: clock.Now})
	woken, done := make(chan struct{}), make(chan struct{})
	c.hookWoken = func(*entry) {
		close(woken)
		<-done
	}
	defer func() {
		select {
		case <-done:
		default:
			close(done)
		}
	}()
	body := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	if _, res, err := serve(t, c, "r", r.bare, "", body); res != Miss || err != nil {
		t.Fatalf("got %v %v", res, err)
	}
	<-woken // the producer is now held between waking and returning
	clock.Add(time.Minute)
	if n, err := c.Sweep(context.Background()); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if n := countFiles(t, c.cfg.Dir); n != 0 {
		t.Fatalf("%d entry files left after the Sweep", n)
	}
	close(done)
}

// TestClose: Close kills a production in progress, its reader gets an
// error, and the cache refuses work afterwards; Close twice is fine.
func TestClose(t *testing.T) {
	r := newRepo(t, 6)
	c := newCache(t, Config{})
	g := blockFirstWrite(c)
	body := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	errc := make(chan error)
	go func() { _, _, err := serve(t, c, "r", r.bare, "", body); errc <- err }()
	g.wait(t)
	c.Close()
	if err := <-errc; err == nil {
		t.Fatal("reader of a killed production got no error")
	}
	c.Close()
	if _, _, err := serve(t, c, "r", r.bare, "", body); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if countFiles(t, c.cfg.Dir) != 0 {
		t.Fatal("files left after Close")
	}
}

// TestReaderContext: a reader whose context ends stops waiting, and the
// production it started completes for the next request.
func TestReaderContext(t *testing.T) {
	r := newRepo(t, 6)
	c := newCache(t, Config{})
	g := blockFirstWrite(c)
	body := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := c.ServeUploadPack(ctx, &bytes.Buffer{}, "r", r.bare, "", bytes.NewReader(body))
		errc <- err
	}()
	g.wait(t)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	close(g.open)
	waitFor(t, "publication", func() bool { return c.Stats().Published == 1 })
	if _, res, err := serve(t, c, "r", r.bare, "", body); res != Hit || err != nil {
		t.Fatalf("%v %v", res, err)
	}
}

func TestMalformedRejected(t *testing.T) {
	c := newCache(t, Config{})
	_, res, err := serve(t, c, "r", t.TempDir(), "", []byte("0032want nothex"))
	if res != Rejected || !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
	if st := c.Stats(); st.Rejected != 1 || st.GitStarted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// cancelOnWrite cancels a context on its first write, like a client that
// goes away.
type cancelOnWrite struct{ cancel context.CancelFunc }

func (c cancelOnWrite) Write(p []byte) (int, error) { c.cancel(); return len(p), nil }

// TestBypassContext: a bypassed request's git dies with its context.
func TestBypassContext(t *testing.T) {
	r := newRepo(t, 40) // 640 KiB: git is still writing when it is killed
	c := newCache(t, Config{MinFree: 1 << 62})
	body := v0Clone(v0caps, run(t, r.bare, "rev-parse", "main"))
	ctx, cancel := context.WithCancel(context.Background())
	res, err := c.ServeUploadPack(ctx, cancelOnWrite{cancel}, "r", r.bare, "", bytes.NewReader(body))
	if res != Bypass || !errors.Is(err, ErrGit) {
		t.Fatalf("%v %v", res, err)
	}
}

// failingGenerations has no generation to give.
type failingGenerations struct{ MemGenerations }

func (*failingGenerations) Generation(context.Context, string) (uint64, error) {
	return 0, errors.New("store unavailable")
}

// TestGenerationsUnavailable: without a generation the cache steps aside.
func TestGenerationsUnavailable(t *testing.T) {
	r := newRepo(t, 2)
	c := newCache(t, Config{Generations: &failingGenerations{}})
	out, res, err := serve(t, c, "r", r.bare, "", v0Clone(v0caps, run(t, r.bare, "rev-parse", "main")))
	if res != Bypass || err != nil || completeResponse(0, out) != nil {
		t.Fatalf("%v %v", res, err)
	}
}
