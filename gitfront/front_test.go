package gitfront

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// blockingWeb serves /slow by waiting for release, everything else at
// once.
func blockingWeb(release <-chan struct{}) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	mux.Handle("/", webHandler())
	return mux
}

// get issues a GET with the given User-Agent and returns the response
// with its body read, and the time it took.
func get(t *testing.T, c *http.Client, url, agent string) (*http.Response, string, time.Duration) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", agent)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), time.Since(start)
}

// gitLatency is the median latency of n ref advertisements of proj/pub,
// each starting a real git upload-pack.
func gitLatency(t *testing.T, w *gitWorld, c *http.Client, n int) time.Duration {
	t.Helper()
	var lat testkit.Latencies
	for range n {
		resp, body, d := get(t, c, w.base+"/scm/proj/pub.git/info/refs?service=git-upload-pack", "git/2.39.5")
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "001e# service=git-upload-pack\n0000") {
			t.Fatalf("info/refs: %d %q", resp.StatusCode, body)
		}
		lat = append(lat, d)
	}
	return lat.Quantile(0.5)
}

// TestSegregationWebFlood fills the web pool (every slot and the whole
// queue) with requests that do not finish, and checks that git requests
// keep their unloaded latency, that one more web request is refused at
// once with 503 and Retry-After, and that health checks still answer.
func TestSegregationWebFlood(t *testing.T) {
	release := make(chan struct{})
	w := newGitWorld(t, func(c *Config) {
		c.Web = blockingWeb(release)
		c.Pools.Web = PoolConfig{Concurrency: 4, Queue: 4, QueueTimeout: time.Minute, RetryAfter: 3 * time.Second}
	})
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "push", "-q", w.url("alice", "alice-pw-S3cret", "pub"), "main")
	c := testClient(t)
	base := gitLatency(t, w, c, 20)

	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for range 8 {
		wg.Go(func() { _, _, _ = get(t, c, w.base+"/slow", "curl/8") })
	}
	web := w.front.Pool(PoolWeb)
	testkit.Eventually(t, 10*time.Second, "web pool saturated", func() bool {
		s := web.Stats()
		return s.InFlight == 4 && s.Queued == 4
	})

	resp, body, d := get(t, c, w.base+"/rest/api/1.0/projects", "curl/8")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" || !strings.Contains(body, "web pool is busy") {
		t.Fatalf("full web pool: %d Retry-After=%q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if d > 2*time.Second {
		t.Errorf("the refusal took %v; a full pool must answer at once", d)
	}
	if resp, _, _ := get(t, c, w.base+"/healthz", "curl/8"); resp.StatusCode != 200 {
		t.Errorf("/healthz under a web flood: %d", resp.StatusCode)
	}
	loaded := gitLatency(t, w, c, 20)
	t.Logf("git info/refs median: %v unloaded, %v with the web pool full", base, loaded)
	if loaded > 3*base+50*time.Millisecond {
		t.Errorf("git latency %v with the web pool full, %v without: not segregated", loaded, base)
	}
	if s := web.Stats(); s.Rejected != 1 {
		t.Errorf("web pool rejected %d, want 1", s.Rejected)
	}
}

// blockingPacker holds every upload-pack POST until release.
type blockingPacker struct{ release <-chan struct{} }

func (b blockingPacker) ServeUploadPack(ctx context.Context, _ io.Writer, _, _, _ string, body io.Reader) error {
	select {
	case <-b.release:
		return errors.New("released")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestSegregationCloneFlood fills the git-upload pool with clones that
// do not finish and checks that web requests keep answering at once and
// that one more clone gets 503 with Retry-After.
func TestSegregationCloneFlood(t *testing.T) {
	release := make(chan struct{})
	w := newGitWorld(t, func(c *Config) {
		c.Git.UploadPacker = blockingPacker{release}
		c.Pools.Upload = PoolConfig{Concurrency: 2, Queue: 2, QueueTimeout: time.Minute, RetryAfter: 7 * time.Second}
	})
	c := testClient(t)
	var base testkit.Latencies
	for range 20 {
		_, _, d := get(t, c, w.base+"/rest/api/1.0/projects", "curl/8")
		base = append(base, d)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	post := func() *http.Response {
		req, _ := http.NewRequest("POST", w.base+"/scm/proj/pub.git/git-upload-pack", strings.NewReader("0000"))
		req.Header.Set("Content-Type", uploadCT)
		req.Header.Set("User-Agent", "git/2.39.5")
		resp, err := c.Do(req)
		if err != nil {
			t.Error(err)
			return nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for range 4 {
		wg.Go(func() { post() })
	}
	up := w.front.Pool(PoolUpload)
	testkit.Eventually(t, 10*time.Second, "upload pool saturated", func() bool {
		s := up.Stats()
		return s.InFlight == 2 && s.Queued == 2
	})
	if resp := post(); resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("full upload pool: %+v", resp)
	}
	var loaded testkit.Latencies
	for range 20 {
		resp, _, d := get(t, c, w.base+"/rest/api/1.0/projects", "curl/8")
		if resp.StatusCode != 200 {
			t.Fatalf("web during a clone flood: %d", resp.StatusCode)
		}
		loaded = append(loaded, d)
	}
	b, l := base.Quantile(0.5), loaded.Quantile(0.5)
	t.Logf("web median: %v unloaded, %v with the upload pool full", b, l)
	if l > 3*b+20*time.Millisecond {
		t.Errorf("web latency %v during a clone flood, %v without: not segregated", l, b)
	}
}

// TestDrain: readiness turns false, new requests get 503 with
// Connection: close while the POST continuing a git operation is still
// served, health checks answer, and Drain returns once the request in
// flight finished and the quiet period passed; a Drain whose ctx ends
// first says so.
func TestDrain(t *testing.T) {
	release := make(chan struct{})
	mux := blockingWeb(release)
	const quiet = 100 * time.Millisecond
	w := newGitWorld(t, func(c *Config) { c.Web, c.DrainQuiet = mux, quiet })
	mux.Handle("/readyz", w.front.ReadyHandler(nil))
	c := testClient(t)
	if resp, _, _ := get(t, c, w.base+"/readyz", "curl/8"); resp.StatusCode != 200 {
		t.Fatalf("/readyz before drain: %d", resp.StatusCode)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if resp, _, _ := get(t, c, w.base+"/slow", "curl/8"); resp.StatusCode != 200 {
			t.Errorf("request in flight during drain: %d", resp.StatusCode)
		}
	})
	testkit.Eventually(t, 10*time.Second, "slow request in flight", func() bool {
		return w.front.Pool(PoolWeb).Stats().InFlight == 1
	})
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := w.front.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with a busy front and a short ctx: %v", err)
	}
	drained := make(chan error, 1)
	wg.Go(func() { drained <- w.front.Drain(context.Background()) })
	checkDraining(t, w, c)
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with a request in flight", err)
	default:
	}
	close(release)
	released := time.Now()
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if d := time.Since(released); d < quiet {
		t.Errorf("Drain returned %v after the last request, before the quiet period", d)
	}
	wg.Wait()
	if !w.front.Stats().Draining || w.front.Drain(context.Background()) != nil {
		t.Fatal("Drain is not idempotent")
	}
}

// checkDraining: what a draining front refuses and what it still serves.
func checkDraining(t *testing.T, w *gitWorld, c *http.Client) {
	t.Helper()
	resp, body, _ := get(t, c, w.base+"/scm/proj/pub.git/info/refs?service=git-upload-pack", "git/2.39.5")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !resp.Close || !strings.Contains(body, "draining") {
		t.Fatalf("new git operation while draining: %d close=%v %q", resp.StatusCode, resp.Close, body)
	}
	if resp, _, _ := get(t, c, w.base+"/rest/x", "curl/8"); resp.StatusCode != 503 {
		t.Fatalf("web request while draining: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", w.base+"/scm/proj/pub.git/git-upload-pack", strings.NewReader("0000"))
	req.Header.Set("Content-Type", uploadCT)
	resp, err := c.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload-pack POST (a clone in flight) while draining: %d", resp.StatusCode)
	}
	if resp, body, _ := get(t, c, w.base+"/readyz", "curl/8"); resp.StatusCode != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("/readyz while draining: %d %q", resp.StatusCode, body)
	}
	if resp, _, _ := get(t, c, w.base+"/healthz", "curl/8"); resp.StatusCode != 200 {
		t.Fatalf("/healthz while draining: %d", resp.StatusCode)
	}
}

// TestDrainCloneInFlight starts draining right after a real clone got its
// ref advertisement: the clone completes, a new clone is refused.
func TestDrainCloneInFlight(t *testing.T) {
	var armed atomic.Bool
	var w *gitWorld
	var wg sync.WaitGroup
	defer wg.Wait()
	w = newGitWorld(t, func(c *Config) {
		c.DrainQuiet = 50 * time.Millisecond
		inner := c.Git.Authorizer
		c.Git.Authorizer = AuthorizerFunc(func(ctx context.Context, p Principal, project, repo string, a Action) error {
			if armed.CompareAndSwap(true, false) { // the clone's info/refs
				wg.Go(func() { _ = w.front.Drain(context.Background()) })
				testkit.Eventually(t, 10*time.Second, "draining", w.front.Draining)
			}
			return inner.Authorize(ctx, p, project, repo, a)
		})
	})
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "push", "-q", w.url("alice", "alice-pw-S3cret", "pub"), "main")
	armed.Store(true)
	// A v2 clone: GET info/refs, then POSTs for ls-refs and fetch.
	w.mustGit("", "-c", "protocol.version=2", "clone", "-q", w.url("", "", "pub"), filepath.Join(t.TempDir(), "c"))
	if !w.front.Draining() {
		t.Fatal("the clone did not start the drain")
	}
	out, err := w.git("", "clone", "-q", w.url("", "", "pub"), filepath.Join(t.TempDir(), "late"))
	if err == nil || !strings.Contains(out, "503") {
		t.Fatalf("clone after the drain began: %v\n%s", err, out)
	}
}

// TestReadyCheck: /readyz reports a failing check as 503 with its reason.
func TestReadyCheck(t *testing.T) {
	w := newGitWorld(t, nil)
	h := w.front.ReadyHandler(func(context.Context) error { return errors.New("database unreachable") })
	srv := serve(t, h)
	resp, body, _ := get(t, testClient(t), srv.URL, "curl/8")
	if resp.StatusCode != 503 || !strings.Contains(body, "database unreachable") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// TestFrontStats: the counters add up after some traffic (the anonymous
// push advertisement is refused before it counts as an info/refs).
func TestFrontStats(t *testing.T) {
	w := newGitWorld(t, nil)
	c := testClient(t)
	get(t, c, w.base+"/rest/x", "curl/8")
	get(t, c, w.base+"/scm/proj/pub.git/info/refs?service=git-upload-pack", "git/2.39.5")
	get(t, c, w.base+"/scm/proj/pub.git/info/refs?service=git-receive-pack", "git/2.39.5")
	s := w.front.Stats()
	names := []string{}
	for _, p := range s.Pools {
		names = append(names, p.Name)
		if p.Served != 1 {
			t.Errorf("pool %s served %d, want 1", p.Name, p.Served)
		}
	}
	if !slices.Equal(names, []string{"git-upload", "git-receive", "web"}) {
		t.Errorf("pools %v", names)
	}
	if s.Git.InfoRefs != 1 || s.Git.Processes != 1 || s.Git.Refused != 1 || s.Git.Running != 0 {
		t.Errorf("git stats %+v", s.Git)
	}
}
