package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shoal-dev/shoal/internal/nodestats"
)

// LoadSpec tells the load generator what to drive: it is written as JSON
// to 'shoal bench loadgen' (or passed to RunLoad in process).
type LoadSpec struct {
	// Targets are the nodes' HTTP addresses; requests go round-robin.
	Targets []string `json:"targets"`
	// Token is a Bearer token of a user who may do everything (the admin).
	Token string `json:"token"`
	// Projects and Repos are the data set's keys, in a fixed order.
	Projects []string       `json:"projects"`
	Repos    []RepoRef      `json:"repos"`
	Mix      map[string]int `json:"mix"`
	Zipf     float64        `json:"zipf"`
	Seed     int64          `json:"seed"`
	Clients  int            `json:"clients"`
	Warmup   Duration       `json:"warmup"`
	Duration Duration       `json:"duration"`
	LagProbe Duration       `json:"lag_probe"`
	// Tag makes created repository names unique across stages and arms.
	Tag string `json:"tag"`
	// Bucket, if set, splits the measured window into a timeline of
	// buckets this long (LoadResult.Timeline).
	Bucket Duration `json:"bucket,omitempty"`
}

// RepoRef is a repository and its pull requests' IDs.
type RepoRef struct {
	Project string  `json:"project"`
	Slug    string  `json:"slug"`
	PRs     []int64 `json:"prs"`
}

// LoadResult is what the generator measured after its warm-up.
type LoadResult struct {
	// Seconds is the measured window, from the end of the warm-up until
	// the last client's last operation returned.
	Seconds float64             `json:"seconds"`
	Ops     map[string]*OpCount `json:"ops"`
	// Lag is the invalidation lag histogram (µs): a write through one
	// node returned, until another node read it.
	Lag         string `json:"lag_hist"`
	LagTimeouts int    `json:"lag_timeouts"`
	// CPUSeconds is the generator process's CPU time in the window (user
	// plus system); NumCPU the machine's CPUs.
	CPUSeconds float64  `json:"cpu_seconds"`
	NumCPU     int      `json:"num_cpu"`
	PID        int      `json:"pid"`
	Errors     []string `json:"first_errors,omitempty"`
	// Timeline holds the window's buckets in order (LoadSpec.Bucket).
	Timeline []TimelineBucket `json:"timeline,omitempty"`
}

// TimelineBucket is the operations that started in one bucket of the
// measured window: counts, throughput and latency (ms).
type TimelineBucket struct {
	// At is the bucket's start, seconds from the window's; Seconds its
	// length (the last may be shorter).
	At        float64 `json:"at_s"`
	Seconds   float64 `json:"seconds"`
	Ops       int64   `json:"ops"`
	Errors    int64   `json:"errors"`
	Conflicts int64   `json:"conflicts"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
}

// OpCount is one operation's raw figures: counts and its latency
// histogram (µs), HDR V2 compressed, base64.
type OpCount struct {
	Count     int64  `json:"count"`
	Errors    int64  `json:"errors"`
	Conflicts int64  `json:"conflicts"`
	Hist      string `json:"hist"`
}

// LoadEvent is one line of the generator's output: "measure" when the
// warm-up ends, then "result" with the LoadResult.
type LoadEvent struct {
	Event  string      `json:"event"`
	Result *LoadResult `json:"result,omitempty"`
}

// newHist records microseconds from 1 µs to 2 minutes, 3 digits.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 120e6, 3) }

func encodeHist(h *hdrhistogram.Histogram) string {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return ""
	}
	return string(b)
}

// decodeHist decodes an encoded histogram; an empty or bad one is empty.
func decodeHist(s string) *hdrhistogram.Histogram {
	if s == "" {
		return newHist()
	}
	h, err := hdrhistogram.Decode([]byte(s))
	if err != nil {
		return newHist()
	}
	return h
}

// prRef is one pull request with its repository.
type prRef struct {
	repo *RepoRef
	id   int64
}

// loadgen is one run of the generator.
type loadgen struct {
	spec       LoadSpec
	loadClient *http.Client
	prs        []prRef
	ops        []string // one entry per unit of weight
	next       atomic.Uint64
	started    atomic.Int64 // unix ns of the measured window's start; 0 during warm-up
	stop       atomic.Bool

	errMu  sync.Mutex
	errors []string

	timeline *timeline // nil without LoadSpec.Bucket
}

// timeline collects the window's buckets, shared by the clients.
type timeline struct {
	bucket time.Duration
	mu     sync.Mutex
	hists  []*hdrhistogram.Histogram
	counts [][3]int64 // ops, errors, conflicts
}

// record adds an operation that started at offset into the window.
func (t *timeline) record(offset, took time.Duration, failed, conflict bool) {
	i := int(offset / t.bucket)
	if i < 0 || i >= maxBuckets+1 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.hists) <= i {
		t.hists = append(t.hists, hdrhistogram.New(1, 120e6, 2))
		t.counts = append(t.counts, [3]int64{})
	}
	t.hists[i].RecordValue(max(took.Microseconds(), 1))
	t.counts[i][0]++
	if failed {
		t.counts[i][1]++
	}
	if conflict {
		t.counts[i][2]++
	}
}

// buckets is the timeline of a window of length window; buckets nothing
// started in are there, empty.
func (t *timeline) buckets(window time.Duration) []TimelineBucket {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := max(int((window+t.bucket-1)/t.bucket), len(t.hists))
	out := make([]TimelineBucket, n)
	for i := range out {
		at := time.Duration(i) * t.bucket
		b := TimelineBucket{At: at.Seconds(), Seconds: min(t.bucket, max(window-at, 0)).Seconds()}
		if b.Seconds <= 0 {
			b.Seconds = t.bucket.Seconds()
		}
		if i < len(t.hists) {
			h := t.hists[i]
			b.Ops, b.Errors, b.Conflicts = t.counts[i][0], t.counts[i][1], t.counts[i][2]
			b.OpsPerSec = float64(b.Ops) / b.Seconds
			b.P50Ms, b.P99Ms, b.MaxMs = usMs(h.ValueAtQuantile(50)), usMs(h.ValueAtQuantile(99)), usMs(h.Max())
		}
		out[i] = b
	}
	return out
}

// RunLoad runs spec: warm-up, then the measured window, calling emit with
// "measure" at the boundary. It returns what was measured; if ctx ends
// first it returns ctx's error.
func RunLoad(ctx context.Context, spec LoadSpec, emit func(LoadEvent)) (*LoadResult, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	g := newLoadgen(spec)
	defer g.loadClient.CloseIdleConnections()
	clients := make([]*clientStats, spec.Clients)
	lag := &lagStats{hist: newHist()}
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = newClientStats()
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.runClient(ctx, i, clients[i])
		}()
	}
	if spec.LagProbe > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.runLagProbe(ctx, lag)
		}()
	}
	res, err := g.measure(ctx, emit)
	g.stop.Store(true)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	g.finish(res, clients, lag)
	return res, nil
}

func (s *LoadSpec) check() error {
	switch {
	case len(s.Targets) == 0:
		return fmt.Errorf("loadgen: no targets")
	case len(s.Repos) == 0 || len(s.Projects) == 0:
		return fmt.Errorf("loadgen: empty data set")
	case s.Clients < 1:
		return fmt.Errorf("loadgen: %d clients", s.Clients)
	case s.Zipf <= 1:
		return fmt.Errorf("loadgen: zipf %g must be > 1", s.Zipf)
	case s.Bucket < 0:
		return fmt.Errorf("loadgen: bucket %v is negative", s.Bucket.D())
	case s.Bucket > 0 && s.Duration.D()/s.Bucket.D() > maxBuckets:
		return fmt.Errorf("loadgen: bucket %v makes over %d buckets of %v", s.Bucket.D(), maxBuckets, s.Duration.D())
	}
	return nil
}

func newLoadgen(spec LoadSpec) *loadgen {
	tr := &http.Transport{MaxIdleConns: 4 * (spec.Clients + 2), MaxIdleConnsPerHost: spec.Clients + 2, IdleConnTimeout: time.Minute}
	g := &loadgen{spec: spec, loadClient: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	if spec.Bucket > 0 {
		g.timeline = &timeline{bucket: spec.Bucket.D()}
	}
	for i := range spec.Repos {
		for _, id := range spec.Repos[i].PRs {
			g.prs = append(g.prs, prRef{repo: &spec.Repos[i], id: id})
		}
	}
	// Shuffle once, from the seed, so the hot head of the Zipf
	// distribution is spread over projects; every arm gets the same order.
	r := rand.New(rand.NewPCG(uint64(spec.Seed), 7))
	r.Shuffle(len(g.prs), func(i, j int) { g.prs[i], g.prs[j] = g.prs[j], g.prs[i] })
	for _, op := range Ops {
		for range spec.Mix[op] {
			g.ops = append(g.ops, op)
		}
	}
	return g
}

// measure waits out the warm-up, marks the window and waits its length.
func (g *loadgen) measure(ctx context.Context, emit func(LoadEvent)) (*LoadResult, error) {
	if err := sleepCtx(ctx, g.spec.Warmup.D()); err != nil {
		return nil, err
	}
	cpu0 := nodestats.ReadProcessStats().CPUSeconds
	start := time.Now()
	g.started.Store(start.UnixNano())
	emit(LoadEvent{Event: "measure"})
	if err := sleepCtx(ctx, g.spec.Duration.D()); err != nil {
		return nil, err
	}
	return &LoadResult{Seconds: time.Since(start).Seconds(), CPUSeconds: cpu0, NumCPU: runtime.NumCPU()}, nil
}

// finish merges the clients' figures into res once they have stopped.
func (g *loadgen) finish(res *LoadResult, clients []*clientStats, lag *lagStats) {
	res.Seconds = time.Since(time.Unix(0, g.started.Load())).Seconds()
	res.CPUSeconds = nodestats.ReadProcessStats().CPUSeconds - res.CPUSeconds
	res.PID = nodestats.ReadProcessStats().PID
	res.Ops = map[string]*OpCount{}
	for _, op := range Ops {
		if g.spec.Mix[op] <= 0 {
			continue
		}
		h, oc := newHist(), &OpCount{}
		for _, c := range clients {
			s := c.ops[op]
			h.Merge(s.hist)
			oc.Count += s.count
			oc.Errors += s.errors
			oc.Conflicts += s.conflicts
		}
		oc.Hist = encodeHist(h)
		res.Ops[op] = oc
	}
	res.Lag, res.LagTimeouts = encodeHist(lag.hist), lag.timeouts
	res.Errors = g.errors
	if g.timeline != nil {
		res.Timeline = g.timeline.buckets(g.spec.Duration.D())
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type opStats struct {
	hist                     *hdrhistogram.Histogram
	count, errors, conflicts int64
}

type clientStats struct{ ops map[string]*opStats }

func newClientStats() *clientStats {
	c := &clientStats{ops: map[string]*opStats{}}
	for _, op := range Ops {
		c.ops[op] = &opStats{hist: newHist()}
	}
	return c
}

type lagStats struct {
	hist     *hdrhistogram.Histogram
	timeouts int
}

// client is one simulated user: its own random stream and Zipf choosers.
type loadClient struct {
	g              *loadgen
	id             int
	rng            *rand.Rand
	pr, repo, proj *rand.Zipf
	n              int
}

func (g *loadgen) newClient(id int) *loadClient {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", g.spec.Tag, id)
	rng := rand.New(rand.NewPCG(uint64(g.spec.Seed), h.Sum64()))
	zipf := func(n int) *rand.Zipf { return rand.NewZipf(rng, g.spec.Zipf, 1, uint64(max(n-1, 0))) }
	return &loadClient{g: g, id: id, rng: rng, pr: zipf(len(g.prs)), repo: zipf(len(g.spec.Repos)), proj: zipf(len(g.spec.Projects))}
}

// runClient runs operations back to back (a closed loop, no think time)
// until the window ends, recording those that start inside it.
func (g *loadgen) runClient(ctx context.Context, id int, st *clientStats) {
	c := g.newClient(id)
	for !g.stop.Load() && ctx.Err() == nil {
		op := g.ops[c.rng.IntN(len(g.ops))]
		t0 := time.Now()
		status, err := c.do(ctx, op)
		started := g.started.Load()
		if started == 0 || t0.UnixNano() < started || ctx.Err() != nil {
			continue
		}
		took := time.Since(t0)
		s := st.ops[op]
		s.hist.RecordValue(max(took.Microseconds(), 1))
		s.count++
		conflict := err == nil && status == http.StatusConflict
		failed := !conflict && (err != nil || status >= 400)
		switch {
		case conflict:
			s.conflicts++
		case failed:
			s.errors++
			g.noteError(op, status, err)
		}
		if g.timeline != nil {
			g.timeline.record(time.Duration(t0.UnixNano()-started), took, failed, conflict)
		}
	}
}

func (g *loadgen) noteError(op string, status int, err error) {
	g.errMu.Lock()
	defer g.errMu.Unlock()
	if len(g.errors) < 5 {
		g.errors = append(g.errors, fmt.Sprintf("%s: status %d: %v", op, status, err))
	}
}

// target picks the next node, round-robin over all clients' requests.
func (g *loadgen) target() string {
	return g.spec.Targets[int(g.next.Add(1)%uint64(len(g.spec.Targets)))]
}

const apiPrefix = "/rest/api/1.0"

func prPath(p prRef) string {
	return fmt.Sprintf("%s/projects/%s/repos/%s/pull-requests/%d", apiPrefix, p.repo.Project, p.repo.Slug, p.id)
}

// do runs one operation and returns the last HTTP status.
func (c *loadClient) do(ctx context.Context, op string) (int, error) {
	g := c.g
	switch op {
	case OpViewPR:
		return g.get(ctx, g.target(), prPath(c.pickPR()), nil)
	case OpListPRs:
		r := g.spec.Repos[c.repo.Uint64()]
		return g.get(ctx, g.target(), fmt.Sprintf("%s/projects/%s/repos/%s/pull-requests?limit=25", apiPrefix, r.Project, r.Slug), nil)
	case OpBrowseRepos:
		return g.get(ctx, g.target(), fmt.Sprintf("%s/projects/%s/repos?limit=25", apiPrefix, g.spec.Projects[c.proj.Uint64()]), nil)
	case OpListComments:
		return g.get(ctx, g.target(), prPath(c.pickPR())+"/comments", nil)
	case OpAddComment:
		return g.send(ctx, http.MethodPost, g.target(), prPath(c.pickPR())+"/comments",
			map[string]any{"text": fmt.Sprintf("load comment %d from loadClient %d", c.rng.Uint32(), c.id)})
	case OpUpdatePR:
		return c.updatePR(ctx, c.pickPR())
	case OpCreateRepo:
		c.n++
		name := fmt.Sprintf("bench-%s-c%d-%d", g.spec.Tag, c.id, c.n)
		return g.send(ctx, http.MethodPost, g.target(), fmt.Sprintf("%s/projects/%s/repos", apiPrefix, g.spec.Projects[c.proj.Uint64()]),
			map[string]any{"name": name})
	}
	return 0, fmt.Errorf("unknown operation %q", op)
}

func (c *loadClient) pickPR() prRef { return c.g.prs[c.pr.Uint64()] }

// updatePR reads the pull request's version through one node and writes a
// new title with it through the next: 409 if another writer won.
func (c *loadClient) updatePR(ctx context.Context, p prRef) (int, error) {
	var cur struct {
		Version int64 `json:"version"`
	}
	status, err := c.g.get(ctx, c.g.target(), prPath(p), &cur)
	if err != nil || status != http.StatusOK {
		return status, err
	}
	return c.g.send(ctx, http.MethodPut, c.g.target(), prPath(p),
		map[string]any{"version": cur.Version, "title": fmt.Sprintf("Load update %d by loadClient %d", c.rng.Uint32(), c.id)})
}

// get GETs path and decodes a 200's body into out if out is not nil.
func (g *loadgen) get(ctx context.Context, host, path string, out any) (int, error) {
	return g.request(ctx, http.MethodGet, host, path, nil, out)
}

func (g *loadgen) send(ctx context.Context, method, host, path string, body any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	return g.request(ctx, method, host, path, b, nil)
}

func (g *loadgen) request(ctx context.Context, method, host, path string, body []byte, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+host+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+g.spec.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.loadClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusConflict {
		msg, _ := url.QueryUnescape(resp.Status)
		return resp.StatusCode, fmt.Errorf("%s %s: %s", method, path, strings.TrimSpace(msg))
	}
	return resp.StatusCode, err
}

// runLagProbe measures invalidation lag every LagProbe during the window:
// it reads a pull request through node B (so B caches it), writes a new
// title through node A, and from the moment A answered polls B until B
// returns the new title. On a one-node cluster A and B are the same node.
func (g *loadgen) runLagProbe(ctx context.Context, st *lagStats) {
	c := g.newClient(-1)
	t := time.NewTicker(g.spec.LagProbe.D())
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if g.stop.Load() {
			return
		}
		if g.started.Load() == 0 {
			continue
		}
		a := g.spec.Targets[k%len(g.spec.Targets)]
		b := g.spec.Targets[(k+1)%len(g.spec.Targets)]
		lag, ok, err := g.probeOnce(ctx, c.pickPR(), a, b, fmt.Sprintf("Lag probe %d", k))
		switch {
		case err != nil:
			continue // a 409 against a load writer, or the window ended
		case !ok:
			st.timeouts++
		default:
			st.hist.RecordValue(max(lag.Microseconds(), 1))
		}
	}
}

// probeOnce is one lag probe; ok is false if B did not see the write
// within 5 seconds.
func (g *loadgen) probeOnce(ctx context.Context, p prRef, a, b, title string) (time.Duration, bool, error) {
	var cur struct {
		Version int64  `json:"version"`
		Title   string `json:"title"`
	}
	if _, err := g.get(ctx, b, prPath(p), &cur); err != nil {
		return 0, false, err
	}
	body, _ := json.Marshal(map[string]any{"version": cur.Version, "title": title})
	var wroteV struct {
		Version int64 `json:"version"`
	}
	status, err := g.request(ctx, http.MethodPut, a, prPath(p), body, &wroteV)
	if err != nil || status != http.StatusOK {
		return 0, false, fmt.Errorf("probe write: %d %v", status, err)
	}
	wrote := time.Now()
	for time.Since(wrote) < 5*time.Second {
		if g.stop.Load() {
			return 0, false, errors.New("the window ended")
		}
		if _, err := g.get(ctx, b, prPath(p), &cur); err != nil {
			return 0, false, err
		}
		// A load writer may have written after us: a later version counts.
		if cur.Version >= wroteV.Version {
			return time.Since(wrote), true, nil
		}
		if err := sleepCtx(ctx, 200*time.Microsecond); err != nil {
			return 0, false, err
		}
	}
	return 0, false, nil
}
