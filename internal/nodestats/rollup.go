package nodestats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/scheduler"
)

// The cluster-wide rollup.
const (
	// RunnerRollup is the rollup's runner key (RollupRunner); the node
	// schedules it RunOncePerCluster every RollupEvery.
	RunnerRollup = "stats.rollup"
	RollupEvery  = 30 * time.Second
	// RollupKey is where the rollup lives in the consistent store.
	RollupKey = "stats/cluster"
)

// ClusterStats is the cluster-wide rollup the stats job writes and
// GET /rest/api/1.0/admin/cluster-stats answers.
type ClusterStats struct {
	ComputedAt time.Time `json:"computed_at"`
	ComputedBy string    `json:"computed_by"`
	Total      Rollup    `json:"total"`
	Nodes      []Rollup  `json:"nodes"`
	// Missing are alive members that did not answer in time.
	Missing []string `json:"missing,omitempty"`
}

// Rollup is one node's counters (or their sum), summed over regions.
type Rollup struct {
	Node          string  `json:"node,omitempty"`
	CacheMode     string  `json:"cache_mode,omitempty"`
	Hits          uint64  `json:"hits"`
	Misses        uint64  `json:"misses"`
	HitRatio      float64 `json:"hit_ratio"`
	Loads         uint64  `json:"loads"`
	Puts          uint64  `json:"puts"`
	RefusedPuts   uint64  `json:"refused_puts"`
	Invalidations uint64  `json:"invalidations"`
	MissedClears  uint64  `json:"missed_clears"`
	RemoteCalls   uint64  `json:"remote_calls"`
	RemoteBytes   uint64  `json:"remote_bytes"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	RSSBytes      uint64  `json:"rss_bytes"`
}

// rollupOf sums a node's counters over its regions.
func rollupOf(st Stats) Rollup {
	r := Rollup{Node: st.Node, CacheMode: st.CacheMode}
	r.add(Rollup{MissedClears: st.Cache.Node.MissedClears, RemoteCalls: st.Cache.Node.RemoteCalls,
		RemoteBytes: st.Cache.Node.RemoteBytes, CPUSeconds: st.Process.CPUSeconds, RSSBytes: st.Process.RSSBytes})
	for _, rs := range st.Cache.Regions {
		r.add(Rollup{Hits: rs.Hits, Misses: rs.Misses, Loads: rs.Loads, Puts: rs.Puts,
			RefusedPuts: rs.RefusedPuts, Invalidations: rs.Invalidations})
	}
	return r
}

// add sums r's counters into t and recomputes the hit ratio.
func (t *Rollup) add(r Rollup) {
	t.Hits += r.Hits
	t.Misses += r.Misses
	t.Loads += r.Loads
	t.Puts += r.Puts
	t.RefusedPuts += r.RefusedPuts
	t.Invalidations += r.Invalidations
	t.MissedClears += r.MissedClears
	t.RemoteCalls += r.RemoteCalls
	t.RemoteBytes += r.RemoteBytes
	t.CPUSeconds += r.CPUSeconds
	t.RSSBytes += r.RSSBytes
	t.HitRatio = ratio(t.Hits, t.Hits+t.Misses)
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// RollupRunner is the stats.rollup runner: it asks every alive member for
// its counters (this node's from src, the others' through the peer RPC
// that ServeRPC answers, 2 s each; a member that does not answer is
// listed as Missing) and writes their sum to store under RollupKey.
func RollupRunner(src *Sources, store *cp.Store) scheduler.Runner {
	return scheduler.RunnerFunc(func(ctx context.Context, _ scheduler.Request) error { return rollup(ctx, src, store) })
}

func rollup(ctx context.Context, src *Sources, store *cp.Store) error {
	out := ClusterStats{ComputedAt: time.Now().UTC(), ComputedBy: src.Node.Name()}
	for _, m := range src.Node.Members() {
		if m.State != cluster.StateAlive {
			continue
		}
		st, err := memberStats(ctx, src, m)
		if err != nil {
			out.Missing = append(out.Missing, m.Name)
			continue
		}
		r := rollupOf(st)
		out.Nodes = append(out.Nodes, r)
		out.Total.add(r)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = store.Put(ctx, RollupKey, b)
	return err
}

// ReadMember reads a member's counters: this node's from src, another's
// through RPCRead (within 2 s, or ctx).
func ReadMember(ctx context.Context, src *Sources, m cluster.Member) (Stats, error) {
	return memberStats(ctx, src, m)
}

func memberStats(ctx context.Context, src *Sources, m cluster.Member) (Stats, error) {
	if m.Name == src.Node.Name() {
		return src.Read(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	b, err := src.Node.RPC().Call(ctx, m.Name, RPCRead, nil)
	if err != nil {
		return Stats{}, fmt.Errorf("%s: %w", m.Name, err)
	}
	var st Stats
	return st, json.Unmarshal(b, &st)
}

// RPCRead is the peer RPC that answers a node's counters (Read, as JSON)
// for another member's rollup: the members ask each other over the
// cluster's own connections, not the HTTP API, which wants a user's
// credentials.
const RPCRead = "nodestats.read"

// ServeRPC answers RPCRead on src.Node's peer RPC.
func ServeRPC(src *Sources) {
	src.Node.RPC().Handle(RPCRead, func(context.Context, string, []byte) ([]byte, error) {
		return json.Marshal(src.Read())
	})
}

// ClusterStatsHandler answers the latest rollup from store (a local
// read), to administrators, in the REST API's error shape
// ({"errors":[{"message":…}]}): 401, 403, 404 before the first rollup.
func ClusterStatsHandler(store *cp.Store, caller func(*http.Request) (authenticated, admin bool)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { clusterStats(w, r, store, caller) })
}

func clusterStats(w http.ResponseWriter, r *http.Request, store *cp.Store, caller func(*http.Request) (bool, bool)) {
	authenticated, admin := caller(r)
	switch {
	case !authenticated:
		w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
		writeJSON(w, http.StatusUnauthorized, restError("authentication required"))
		return
	case !admin:
		writeJSON(w, http.StatusForbidden, restError("only administrators may read the cluster statistics"))
		return
	}
	kv, err := store.StaleGet(RollupKey)
	if errors.Is(err, cp.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, restError(fmt.Sprintf("no rollup yet: the cluster-stats job runs every %v", RollupEvery)))
		return
	}
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, restError("the cluster statistics are unavailable: "+err.Error()))
		return
	}
	// Decoded and encoded again, never passed through: what is served is
	// the rollup's shape with every string JSON-escaped (<, > and & as
	// \u003c, \u003e, \u0026), whatever the stored value holds.
	var cs ClusterStats
	if err := json.Unmarshal(kv.Value, &cs); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, restError(fmt.Sprintf("the stored rollup is unreadable; the cluster-stats job writes a new one every %v", RollupEvery)))
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	writeJSON(w, http.StatusOK, cs)
}

func restError(msg string) map[string]any {
	return map[string]any{"errors": []map[string]string{{"message": msg}}}
}
