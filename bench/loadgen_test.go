package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI answers the load generator's requests like the REST API would,
// keeping each pull request's version, and fails every other post (so a
// short window on a loaded machine still sees failures).
type fakeAPI struct {
	mu       sync.Mutex
	versions map[string]int64
	posts    int
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok" {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := strings.TrimSuffix(r.URL.Path, "/comments")
	switch {
	case r.Method == http.MethodGet:
		json.NewEncoder(w).Encode(map[string]any{"version": f.versions[key], "title": "t"})
	case r.Method == http.MethodPut:
		var body struct{ Version int64 }
		json.NewDecoder(r.Body).Decode(&body)
		if body.Version != f.versions[key] {
			w.WriteHeader(http.StatusConflict)
			return
		}
		f.versions[key]++
		json.NewEncoder(w).Encode(map[string]any{"version": f.versions[key]})
	default: // POST: comments and repositories
		f.posts++
		if f.posts%2 == 0 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}
}

// The generator's process protocol: a spec in, "measure" then "result"
// out; the result counts operations, errors and conflicts, and lag.
func TestServeLoadgenProtocol(t *testing.T) {
	api := &fakeAPI{versions: map[string]int64{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	spec := LoadSpec{Targets: []string{host, host}, Token: "tok", Projects: []string{"A", "B"},
		Repos: []RepoRef{{Project: "A", Slug: "x", PRs: []int64{1, 2}}, {Project: "B", Slug: "y", PRs: []int64{3}}},
		Mix:   map[string]int{OpViewPR: 3, OpAddComment: 1, OpUpdatePR: 2, OpBrowseRepos: 1}, Zipf: 1.5, Seed: 1, Clients: 4,
		Warmup: Duration(100 * time.Millisecond), Duration: Duration(500 * time.Millisecond), LagProbe: Duration(20 * time.Millisecond), Tag: "t",
		Bucket: Duration(100 * time.Millisecond)}
	in, _ := json.Marshal(spec)
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- ServeLoadgen(context.Background(), strings.NewReader(string(in)), pw)
		pw.Close()
	}()
	var events []LoadEvent
	sc := bufio.NewScanner(pr)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var ev LoadEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		events = append(events, ev)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[0].Event != "measure" || events[1].Event != "result" || events[1].Result == nil {
		t.Fatalf("events: %+v", events)
	}
	res := events[1].Result
	st := stageFigures(spec, res, counterSnapshot{}, counterSnapshot{}, false)
	byOp := map[string]OpResult{}
	for _, o := range st.Ops {
		byOp[o.Op] = o
	}
	if len(st.Ops) != 4 || byOp[OpViewPR].Count == 0 || byOp[OpViewPR].P50Ms <= 0 || byOp[OpViewPR].Errors != 0 {
		t.Errorf("ops: %+v", st.Ops)
	}
	if byOp[OpAddComment].Errors == 0 || len(st.Errors) == 0 {
		t.Errorf("the failing posts were not counted: %+v %v", byOp[OpAddComment], st.Errors)
	}
	if st.Total.Count != byOp[OpViewPR].Count+byOp[OpAddComment].Count+byOp[OpUpdatePR].Count+byOp[OpBrowseRepos].Count {
		t.Errorf("total %d is not the sum of the operations", st.Total.Count)
	}
	if st.Lag.Samples == 0 || res.Seconds < 0.5 || res.NumCPU < 1 || st.Traffic.SocketBytes != -1 {
		t.Errorf("lag %+v, seconds %v, cpus %d, traffic %+v", st.Lag, res.Seconds, res.NumCPU, st.Traffic)
	}
	// The timeline (spec.Bucket) splits the same operations into buckets.
	if len(res.Timeline) < 5 {
		t.Fatalf("%d buckets in a 500ms window of 100ms buckets", len(res.Timeline))
	}
	var ops, errs, conflicts int64
	for i, b := range res.Timeline {
		if b.At != float64(i)*0.1 && (b.At-float64(i)*0.1 > 1e-9 || float64(i)*0.1-b.At > 1e-9) || b.Seconds <= 0 {
			t.Errorf("bucket %d: at %v, %v s", i, b.At, b.Seconds)
		}
		if b.Ops > 0 && (b.P50Ms <= 0 || b.P99Ms < b.P50Ms || b.OpsPerSec <= 0) {
			t.Errorf("bucket %d: %+v", i, b)
		}
		ops, errs, conflicts = ops+b.Ops, errs+b.Errors, conflicts+b.Conflicts
	}
	if ops != st.Total.Count || errs != st.Total.Errors || conflicts != st.Total.Conflicts || errs == 0 {
		t.Errorf("timeline: %d ops, %d errors, %d conflicts; totals %d, %d, %d", ops, errs, conflicts, st.Total.Count, st.Total.Errors, st.Total.Conflicts)
	}
}

// Buckets cover the window, the last cut short, empty ones included.
func TestTimelineBuckets(t *testing.T) {
	tl := &timeline{bucket: 400 * time.Millisecond}
	tl.record(100*time.Millisecond, 2*time.Millisecond, false, false)
	tl.record(900*time.Millisecond, 4*time.Millisecond, true, false)
	tl.record(950*time.Millisecond, 6*time.Millisecond, false, true)
	got := tl.buckets(time.Second)
	if len(got) != 3 {
		t.Fatalf("%d buckets, want 3: %+v", len(got), got)
	}
	if got[0].Ops != 1 || got[0].OpsPerSec != 2.5 || got[0].P50Ms < 1.99 || got[0].P50Ms > 2.01 {
		t.Errorf("bucket 0: %+v", got[0])
	}
	if got[1].Ops != 0 || got[1].OpsPerSec != 0 || got[1].At != 0.4 {
		t.Errorf("bucket 1: %+v", got[1])
	}
	if b := got[2]; b.Ops != 2 || b.Errors != 1 || b.Conflicts != 1 || b.Seconds < 0.199 || b.Seconds > 0.201 || b.OpsPerSec < 9.9 || b.MaxMs < 5.9 {
		t.Errorf("bucket 2 (200ms long): %+v", b)
	}
}

// A cancelled context stops the generator with ctx's error.
func TestRunLoadCancelled(t *testing.T) {
	srv := httptest.NewServer(&fakeAPI{versions: map[string]int64{}})
	defer srv.Close()
	spec := LoadSpec{Targets: []string{strings.TrimPrefix(srv.URL, "http://")}, Token: "tok", Projects: []string{"A"},
		Repos: []RepoRef{{Project: "A", Slug: "x", PRs: []int64{1}}}, Mix: map[string]int{OpViewPR: 1}, Zipf: 1.5, Clients: 2,
		Duration: Duration(time.Minute)}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := RunLoad(ctx, spec, func(LoadEvent) {}); err == nil {
		t.Fatal("no error")
	}
}

func TestParseSS(t *testing.T) {
	out := "0      0      127.0.0.1:46820 127.0.0.1:35829\n\t bbr wscale:10,10 bytes_sent:1000 bytes_acked:1001 segs_out:3\n" +
		"0      0      127.0.0.1:35829 127.0.0.1:46820\n\t bbr wscale:10,10 bytes_received:1000 segs_out:1\n"
	before := parseSS(out)
	if len(before) != 2 || before["127.0.0.1:46820 127.0.0.1:35829"] != 1000 || before["127.0.0.1:35829 127.0.0.1:46820"] != 0 {
		t.Fatalf("parsed %v", before)
	}
	after := map[string]int64{"127.0.0.1:46820 127.0.0.1:35829": 1500, "127.0.0.1:1 127.0.0.1:2": 70}
	if d := socketDelta(before, after); d != 570 {
		t.Fatalf("delta %d, want 570 (500 more on one, 70 on a new connection)", d)
	}
	if socketDelta(nil, after) != -1 {
		t.Fatal("no reading is not -1")
	}
}
