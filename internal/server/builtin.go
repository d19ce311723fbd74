package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/scheduler"
)

// The node's built-in jobs.
const (
	// RunnerPackSweep expires and evicts pack cache entries (RunLocally).
	RunnerPackSweep = "packcache.sweep"
	// RunnerStatsRollup gathers every member's counters into one record
	// in the store (RunOncePerCluster).
	RunnerStatsRollup = "stats.rollup"
	// RunnerRecordRun records each run in the store (see runRecord): a
	// job with it makes the scheduler's exactly-once promise checkable
	// from outside, as 'shoal bench chaos' does. Not scheduled by default.
	RunnerRecordRun = "kv.record-run"

	packSweepEvery   = 5 * time.Minute
	statsRollupEvery = 30 * time.Second
	rollupKey        = "stats/cluster"
	// recordRetryFor bounds how long a kv.record-run run retries its write
	// while the store has no leader.
	recordRetryFor = 30 * time.Second
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

// startScheduler starts the node's scheduler with the built-in runners,
// and schedules the built-in jobs in the background: the clustered one
// needs the store's leader, which a starting cluster may not have yet.
func (s *Server) startScheduler() error {
	sc := s.cfg.Scheduler
	sc.Name, sc.Store, sc.Bus, sc.Members, sc.Logger = s.node.Name(), s.store, s.node.Bus(), scheduler.AliveMembers(s.node), s.cfg.Logger
	sched, err := scheduler.New(sc)
	if err != nil {
		return err
	}
	s.svc.sched = sched
	if err := sched.Register(RunnerStatsRollup, scheduler.RunnerFunc(s.runStatsRollup)); err != nil {
		return err
	}
	if err := sched.Register(RunnerRecordRun, scheduler.RunnerFunc(s.runRecord)); err != nil {
		return err
	}
	if s.svc.packs != nil {
		err := sched.Register(RunnerPackSweep, scheduler.RunnerFunc(func(ctx context.Context, _ scheduler.Request) error {
			_, err := s.svc.packs.Sweep(ctx)
			return err
		}))
		if err != nil {
			return err
		}
	}
	if err := sched.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.svc.stopBuiltins = cancel
	s.svc.builtins.Add(1)
	go func() {
		defer s.svc.builtins.Done()
		s.scheduleBuiltins(ctx)
	}()
	return nil
}

// scheduleBuiltins schedules the built-in jobs, retrying until each is in
// place or ctx ends. Every node schedules the same definitions; the
// scheduler treats a repeat as no change.
func (s *Server) scheduleBuiltins(ctx context.Context) {
	epoch := time.Unix(0, 0).UTC() // fire times on a fixed grid, the same on every node
	jobs := []scheduler.Job{{ID: "cluster-stats", Runner: RunnerStatsRollup, Mode: scheduler.RunOncePerCluster,
		Schedule: scheduler.Every(statsRollupEvery, epoch)}}
	if s.svc.packs != nil {
		jobs = append(jobs, scheduler.Job{ID: "packcache-sweep", Runner: RunnerPackSweep, Mode: scheduler.RunLocally,
			Schedule: scheduler.Every(packSweepEvery, epoch)})
	}
	for _, j := range jobs {
		for {
			jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.svc.sched.Schedule(jctx, j)
			cancel()
			if err == nil || errors.Is(err, scheduler.ErrClosed) {
				break
			}
			s.cfg.Logger.Debug("scheduling a built-in job; will retry", "job", j.ID, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// runStatsRollup asks every alive member for its counters and writes the
// sum to the store.
func (s *Server) runStatsRollup(ctx context.Context, req scheduler.Request) error {
	out := ClusterStats{ComputedAt: time.Now().UTC(), ComputedBy: s.node.Name()}
	for _, m := range s.node.Members() {
		if m.State != cluster.StateAlive {
			continue
		}
		st, err := s.memberStats(ctx, m)
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
	_, err = s.store.Put(ctx, rollupKey, b)
	return err
}

// runRecord is the kv.record-run runner. The job's parameters are a key
// prefix (1 to 200 bytes of UTF-8); each run writes the key
// PREFIX + fire time (Unix nanoseconds, 20 digits, so keys sort by fire
// time) + "/" + this node's name + "/" + the run's start (Unix
// nanoseconds), with the node, fire time and start time as JSON. Two runs
// of one fire time leave two keys, whichever nodes ran them: a List of the
// prefix shows both.
// The write is retried while the store has no leader, for up to
// recordRetryFor; then the run fails (the job's history says so).
func (s *Server) runRecord(ctx context.Context, req scheduler.Request) error {
	prefix := string(req.Params)
	if prefix == "" || len(prefix) > 200 || !utf8.ValidString(prefix) {
		return fmt.Errorf("%s: the job's parameters must be a key prefix of 1 to 200 bytes of UTF-8", RunnerRecordRun)
	}
	started := time.Now().UTC()
	key := fmt.Sprintf("%s%020d/%s/%020d", prefix, req.FireTime.UnixNano(), req.Node, started.UnixNano())
	val, err := json.Marshal(map[string]any{"node": req.Node, "fire_time": req.FireTime.UTC(), "started": started})
	if err != nil {
		return err
	}
	give := time.NewTimer(recordRetryFor)
	defer give.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = s.store.Put(pctx, key, val)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-give.C:
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *Server) memberStats(ctx context.Context, m cluster.Member) (Stats, error) {
	if m.Name == s.node.Name() {
		return s.stats(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.HTTP+"/v1/stats", nil)
	if err != nil {
		return Stats{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Stats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Stats{}, fmt.Errorf("%s: /v1/stats answered %s", m.Name, resp.Status)
	}
	var st Stats
	return st, json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&st)
}

// handleClusterStats answers the latest rollup, to administrators.
func (s *Server) handleClusterStats(w http.ResponseWriter, r *http.Request) {
	p, ok := gitfront.PrincipalFrom(r.Context())
	switch {
	case !ok:
		w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
		writeJSON(w, http.StatusUnauthorized, restError("authentication required"))
		return
	case !p.Admin:
		writeJSON(w, http.StatusForbidden, restError("only administrators may read the cluster statistics"))
		return
	}
	kv, err := s.store.StaleGet(rollupKey)
	if errors.Is(err, cp.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, restError(fmt.Sprintf("no rollup yet: the cluster-stats job runs every %v", statsRollupEvery)))
		return
	}
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, restError(err.Error()))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(kv.Value)
}

func restError(msg string) map[string]any {
	return map[string]any{"errors": []map[string]string{{"message": msg}}}
}
