package ui

import (
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/l2cache"
)

// A stream that does not read is dropped once its queue is full; the
// others keep receiving, and publish never blocks.
func TestHubDropsASlowStream(t *testing.T) {
	h := newHub(3, 2)
	tp := topic{page: "cluster"}
	fast, err := h.open(tp)
	if err != nil {
		t.Fatal(err)
	}
	slow, _ := h.open(tp)
	other, _ := h.open(topic{page: "jobs", admin: true})
	if _, err := h.open(tp); err != errTooManyStreams {
		t.Fatalf("a fourth stream: %v, want errTooManyStreams", err)
	}
	for i := range 5 {
		h.publish(tp, []byte{byte(i)})
		<-fast.ch // the fast reader keeps up
	}
	select {
	case <-slow.gone:
	default:
		t.Fatal("a stream 5 messages behind with a queue of 2 was not dropped")
	}
	select {
	case <-fast.gone:
		t.Fatal("the stream that kept up was dropped")
	case <-other.gone:
		t.Fatal("a stream of another topic was dropped")
	default:
	}
	if h.count() != 2 || h.dropped != 1 {
		t.Fatalf("count %d dropped %d, want 2 and 1", h.count(), h.dropped)
	}
	if got := h.topics(); len(got) != 2 {
		t.Fatalf("topics %v", got)
	}
	// A slot freed by the drop is usable again; close ends everything.
	again, err := h.open(tp)
	if err != nil {
		t.Fatal(err)
	}
	h.remove(fast)
	h.remove(fast) // twice is harmless
	h.close()
	for _, s := range []*stream{again, other} {
		select {
		case <-s.gone:
		case <-time.After(time.Second):
			t.Fatal("close left a stream open")
		}
	}
	if _, err := h.open(tp); err != errClosed {
		t.Fatalf("open after close: %v", err)
	}
	h.close()
}

func TestSessionsBoundedAndExpiring(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := newSessions(4, 2, time.Hour, 12*time.Hour)
	s.now = func() time.Time { return now }
	alice, bob := gitfront.Principal{UserID: 1, Name: "alice"}, gitfront.Principal{UserID: 2, Name: "bob"}
	tick := func() { now = now.Add(time.Minute) }
	a1, _ := s.create(alice)
	tick()
	a2, _ := s.create(alice)
	tick()
	a3, _ := s.create(alice) // alice's third: her least recently used (a1) goes
	tick()
	if s.get(a1) != nil || s.get(a2) == nil || s.get(a3) == nil {
		t.Fatal("the per-user bound did not evict alice's least recently used session")
	}
	tick()
	b1, _ := s.create(bob)
	tick()
	s.get(a2) // a2 is now more recent than a3
	tick()
	b2, _ := s.create(bob) // 4 sessions: at the bound
	tick()
	c1, _ := s.create(gitfront.Principal{UserID: 3, Name: "carol"}) // the least recently used overall (a3) goes
	if s.count() != 4 || s.get(a3) != nil || s.get(a2) == nil || s.get(b1) == nil || s.get(b2) == nil || s.get(c1) == nil {
		t.Fatalf("the global bound: %d sessions", s.count())
	}
	// Idle expiry, and expiry however busy after MaxAge.
	now = now.Add(61 * time.Minute)
	if s.get(b1) != nil {
		t.Fatal("a session idle for over an hour is live")
	}
	sess := s.get(c1)
	if sess != nil {
		t.Fatal("c1 idle for over an hour is live")
	}
	d, dsess := s.create(gitfront.Principal{UserID: 4, Name: "dave"})
	for range 13 * 2 {
		now = now.Add(30 * time.Minute)
		s.get(d)
	}
	if s.get(d) != nil || s.valid(d, dsess) {
		t.Fatal("a session kept busy is live after 13 hours")
	}
	s.sweep()
	if s.count() != 0 {
		t.Fatalf("%d sessions after every one expired", s.count())
	}
	if s.get("") != nil || s.get("unknown") != nil {
		t.Fatal("an unknown cookie has a session")
	}
	if sameToken("", "") || sameToken("a", "") || !sameToken("abc", "abc") || sameToken("abc", "abd") {
		t.Fatal("sameToken")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/jobs":              "/ui/jobs",
		"/ui/store?prefix=a%2F": "/ui/store?prefix=a%2F",
		"":                      "/ui/cluster",
		"https://evil.example/": "/ui/cluster",
		"//evil.example/ui/":    "/ui/cluster",
		"/ui/login?next=/x":     "/ui/cluster",
		"/ui/events?page=jobs":  "/ui/cluster",
		"/v1/kv":                "/ui/cluster",
		"/ui/\\evil":            "/ui/cluster",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestChartScales(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := drawChart("x", "/s", 15*time.Minute, now, []seriesData{{name: "a", class: "m0", values: []value{
		{at: now.Add(-20 * time.Minute), v: 1e9}, // before the window: ignored
		{at: now.Add(-15 * time.Minute), v: 0},
		{at: now, v: 37},
	}}})
	if c.Empty || len(c.Series) != 1 || c.YTicks[4].Label != "50/s" {
		t.Fatalf("chart: %+v", c)
	}
	if c.Series[0].Points != "52.0,174.0 628.0,54.1" || c.Series[0].Last != "37/s" {
		t.Fatalf("points %q last %q", c.Series[0].Points, c.Series[0].Last)
	}
	if e := drawChart("y", "", time.Minute, now, nil); !e.Empty {
		t.Fatal("a chart without values is not empty")
	}
	for v, want := range map[float64]float64{0: 1, 0.5: 1, 3: 5, 37: 50, 101: 200, 1000: 1000, 1001: 2000} {
		if got := niceCeil(v); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", v, got, want)
		}
	}
}

func TestCookieNamesPerNode(t *testing.T) {
	s, l := cookieNames("node1")
	if s != "shoal_ui_node1" || l != "shoal_ui_login_node1" {
		t.Fatalf("%q %q", s, l)
	}
	if s, _ := cookieNames(`a b;c="é"`); s != "shoal_ui_a_b_c____" {
		t.Fatalf("unsafe characters: %q", s)
	}
}

func TestLagQuantilesOverTheWindow(t *testing.T) {
	h := func(counts map[int]uint64) []uint64 {
		out := make([]uint64, l2cache.LagBuckets)
		for i, c := range counts {
			out[i] = c
		}
		return out
	}
	pt := func(lag []uint64) point { return point{Nodes: map[string]counters{"a": {Lag: lag}}} }
	// 100 invalidations in the window: 50 in bucket 9 (≤ 512µs), 40 in
	// 10, 9 in 12, 1 in 20; the 1,000 before the window do not count.
	pts := []point{pt(h(map[int]uint64{3: 1000})), pt(h(map[int]uint64{3: 1000, 9: 20})),
		pt(h(map[int]uint64{3: 1000, 9: 50, 10: 40, 12: 9, 20: 1}))}
	q, n := lagQuantiles(pts, "a", 0.5, 0.9, 0.99, 1)
	if n != 100 || strings.Join(q, " ") != "≤ 512µs ≤ 1.02ms ≤ 4.1ms ≤ 1.05s" {
		t.Fatalf("%d: %q", n, q)
	}
	// A restart (counters down): the latest histogram alone.
	pts = append(pts, pt(h(map[int]uint64{2: 3, 27: 1})))
	if q, n := lagQuantiles(pts, "a", 0.5, 1); n != 4 || strings.Join(q, " ") != "≤ 4µs > 1m07s" {
		t.Fatalf("after a restart %d: %q", n, q)
	}
	if _, n := lagQuantiles(pts, "b", 0.5); n != 0 {
		t.Fatal("a node without points has quantiles")
	}
}
