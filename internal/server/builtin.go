package server

import (
	"context"
	"time"

	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/internal/ui"
	"github.com/shoal-dev/shoal/scheduler"
)

// The node's built-in jobs.
const (
	// RunnerPackSweep expires and evicts pack cache entries (RunLocally).
	RunnerPackSweep = "packcache.sweep"

	packSweepEvery = 5 * time.Minute
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
	// Not scheduled by default: 'shoal bench chaos' schedules it.
	if err := sched.Register(scheduler.RunnerRecordRun, scheduler.RecordRun(s.store)); err != nil {
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
	epoch := time.Unix(0, 0).UTC() // fire times on a fixed grid, the same on every node
	jobs := []scheduler.Job{{ID: "cluster-stats", Runner: nodestats.RunnerRollup, Mode: scheduler.RunOncePerCluster,
		Schedule: scheduler.Every(nodestats.RollupEvery, epoch)}}
	if s.svc.packs != nil {
		jobs = append(jobs, scheduler.Job{ID: "packcache-sweep", Runner: RunnerPackSweep, Mode: scheduler.RunLocally,
			Schedule: scheduler.Every(packSweepEvery, epoch)})
	}
	// In the background: the clustered job needs the store's leader,
	// which a starting cluster may not have yet.
	ctx, cancel := context.WithCancel(context.Background())
	s.svc.stopBuiltins = cancel
	s.svc.builtins.Add(1)
	go func() {
		defer s.svc.builtins.Done()
		sched.Ensure(ctx, jobs...)
	}()
	return nil
}

// Scheduler is the node's job scheduler.
func (s *Server) Scheduler() *scheduler.Scheduler { return s.svc.sched }

// UI is the node's dashboard.
func (s *Server) UI() *ui.UI { return s.svc.ui }
