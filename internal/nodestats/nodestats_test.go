package nodestats_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/scheduler"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

// sources starts n members with stores and LOCAL caches under read
// leases, and reads one hit, one miss and one load on member 0.
func sources(t *testing.T, n int) ([]*clustertest.Member, *nodestats.Sources) {
	t.Helper()
	net := memnet.New(3)
	t.Cleanup(func() { net.Close() })
	members := clustertest.StartWithStores(t, net, n)
	m := members[0]
	lease, err := l2cache.NewReadLease(l2cache.LeaseConfig{Name: m.Node.Name(), Store: m.Store, Duration: 2 * time.Second, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lease.Close)
	c, err := l2cache.New(l2cache.Config{Mode: cluster.CacheModeLocal, Node: m.Node, Bus: m.Node.Bus(), Lease: lease, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	testkit.Eventually(t, 20*time.Second, "the read lease", lease.Valid)
	r, err := c.Region("things", l2cache.EntityRegion, l2cache.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	load := func(context.Context) ([]byte, error) { return []byte("v"), nil }
	ctx := context.Background()
	r.Get(ctx, "k", load)
	testkit.Eventually(t, 10*time.Second, "a cache hit", func() bool {
		r.Get(ctx, "k", load)
		return c.Stats().Regions["things"].Hits > 0
	})
	return members, &nodestats.Sources{Node: m.Node, Cache: c, Lease: lease}
}

// /v1/stats and /metrics read the same counters; the optional sources
// may be missing.
func TestStatsAndMetrics(t *testing.T) {
	_, src := sources(t, 1)
	if err := src.Cache.UpdateSpaces(context.Background(), "things"); err != nil { // a write's cache work
		t.Fatal(err)
	}
	srv := httptest.NewServer(nodestats.Handler(src, func(*http.Request) bool { return true }))
	defer srv.Close()
	var st nodestats.Stats
	get(t, srv.URL, &st)
	rs := st.Cache.Regions["things"]
	if st.Node != src.Node.Name() || st.CacheMode != "local" || rs.Hits < 1 || rs.Misses < 1 || rs.Loads < 1 ||
		st.Process.PID == 0 || st.Process.Goroutines == 0 || st.Process.GOMAXPROCS < 1 || st.Partitions != nil {
		t.Fatalf("stats %+v", st)
	}
	if w := st.Cache.Node.WriteLatency["spaces"]; len(w.Buckets) != l2cache.LagBuckets {
		t.Fatalf("write latency %+v: the query-space update is not counted", st.Cache.Node.WriteLatency)
	}
	msrv := httptest.NewServer(nodestats.MetricsHandler(src))
	defer msrv.Close()
	body := getText(t, msrv.URL)
	for _, want := range []string{`shoal_l2_hits_total{node="` + st.Node + `",region="things"}`, "shoal_bus_published_total",
		"shoal_rpc_calls_total", "shoal_cluster_members_alive", "shoal_l2_lease_valid", "go_goroutines",
		"shoal_l2_stamp_folds_total", "shoal_l2_space_updates_retried_total", "shoal_l2_space_update_retry_drops_total",
		`shoal_l2_write_seconds_count{node="` + st.Node + `",op="spaces"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, absent := range []string{"shoal_pack_", "shoal_pool_"} {
		if strings.Contains(body, absent) {
			t.Errorf("/metrics has %s without the pack cache or the front", absent)
		}
	}
}

// The rollup sums the members that answer, lists the ones that do not,
// and is served from the store to administrators only.
func TestRollup(t *testing.T) {
	members, src := sources(t, 2) // the second member has no HTTP address: it cannot answer
	store := members[0].Store
	h := httptest.NewServer(nodestats.ClusterStatsHandler(store, func(r *http.Request) (bool, bool) {
		who := r.Header.Get("X-Who")
		return who != "", who == "admin"
	}))
	defer h.Close()
	status := func(who string) (int, string) {
		req, _ := http.NewRequest("GET", h.URL, nil)
		req.Header.Set("X-Who", who)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := status("admin"); code != 404 || !strings.Contains(body, `"errors"`) || !strings.Contains(body, "no rollup yet") {
		t.Fatalf("before the first rollup: %d %s", code, body)
	}
	if err := nodestats.RollupRunner(src, store).Run(context.Background(), scheduler.Request{}); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	// The handler reads the local replica: a follower's lags the write.
	testkit.Eventually(t, 10*time.Second, "the rollup on this replica", func() bool {
		code, body = status("admin")
		return code != 404
	})
	var cs nodestats.ClusterStats
	if code != 200 || json.Unmarshal([]byte(body), &cs) != nil {
		t.Fatalf("rollup: %d %s", code, body)
	}
	self := src.Read().Cache.Regions["things"]
	if len(cs.Nodes) != 1 || cs.Nodes[0].Node != src.Node.Name() || len(cs.Missing) != 1 || cs.Missing[0] != members[1].Node.Name() ||
		cs.ComputedBy != src.Node.Name() || cs.Total.Hits != self.Hits || cs.Total.Misses != self.Misses ||
		cs.Total.HitRatio != float64(self.Hits)/float64(self.Hits+self.Misses) || cs.Total.CPUSeconds <= 0 {
		t.Fatalf("rollup %+v, this node's region %+v", cs, self)
	}
	for who, want := range map[string]int{"": 401, "bob": 403} {
		if code, body := status(who); code != want || !strings.Contains(body, `"errors"`) {
			t.Errorf("as %q: %d %s, want %d", who, code, body, want)
		}
	}
	// What the store holds is decoded and encoded again: markup in it is
	// escaped, and a value that is not a rollup is not served.
	evil := `{"computed_by":"<script>alert(1)</script>","missing":["</script><img src=x onerror=alert(1)>"],"nodes":[]}`
	if _, err := store.Put(context.Background(), nodestats.RollupKey, []byte(evil)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the injected rollup on this replica", func() bool {
		_, body = status("admin")
		return strings.Contains(body, "alert")
	})
	if code, body := status("admin"); code != 200 || strings.ContainsAny(body, "<>") || !strings.Contains(body, `\u003cscript\u003e`) {
		t.Fatalf("a rollup with markup: %d %s", code, body)
	}
	if _, err := store.Put(context.Background(), nodestats.RollupKey, []byte("<html>not json")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "an unreadable rollup refused", func() bool {
		code, body := status("admin")
		return code == 503 && strings.Contains(body, `"errors"`) && !strings.Contains(body, "<html>")
	})
}

func get(t *testing.T, url string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(getText(t, url)), v); err != nil {
		t.Fatal(err)
	}
}

func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}
