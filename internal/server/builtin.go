package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/scheduler"
)

// The node's built-in jobs.
const (
	// RunnerPackSweep expires and evicts pack cache entries (RunLocally).
	RunnerPackSweep = "packcache.sweep"
	// RunnerRecordRun records each run in the store (see runRecord): a
	// job with it makes the scheduler's exactly-once promise checkable
	// from outside, as 'shoal bench chaos' does. Not scheduled by default.
	RunnerRecordRun = "kv.record-run"

	packSweepEvery = 5 * time.Minute
	// recordRetryFor bounds how long a kv.record-run run retries its write
	// while the store has no leader.
	recordRetryFor = 30 * time.Second
)

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
	if err := sched.Register(nodestats.RunnerRollup, nodestats.RollupRunner(&s.svc.stats, s.store)); err != nil {
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
	jobs := []scheduler.Job{{ID: "cluster-stats", Runner: nodestats.RunnerRollup, Mode: scheduler.RunOncePerCluster,
		Schedule: scheduler.Every(nodestats.RollupEvery, epoch)}}
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
