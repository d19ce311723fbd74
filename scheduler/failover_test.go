package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// A node that dies mid-run loses that run; the next fire time runs on a
// live node, and the lost run shows as lost once the node is known dead.
func TestClusterNodeDiesMidRun(t *testing.T) {
	base := NewFakeClock(t0)
	f1, f2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	started := make(chan string, 3)
	led := newLedger()
	_, members, scheds := startCluster(t, clusterOpts{
		seed: 21, clocks: []Clock{base, base, base},
		runner: func(int) Runner {
			rec := led.runner(nil)
			return RunnerFunc(func(ctx context.Context, req Request) error {
				rec(ctx, req)
				if req.FireTime.Equal(f1) {
					started <- req.Node
					<-ctx.Done() // a long run, cut short by the node's death
					return ctx.Err()
				}
				return nil
			})
		},
	})
	mustSchedule(t, scheds[0], clusterJob("tick", Every(time.Minute, f1)))
	waitCopies(t, "tick", scheds...)
	base.Advance(time.Minute)
	dead := <-started
	var victim int
	for i, m := range members {
		if m.Node.Name() == dead {
			victim = i
		}
	}
	members[victim].Kill()
	scheds[victim].Close()
	live := scheds[(victim+1)%3]

	base.Advance(time.Minute)
	// Poll, moving the fake clock in small steps so that the live nodes'
	// retries (after the store lost a voter, maybe its leader) come due.
	testkit.Eventually(t, 20*time.Second, "the next fire time to run on a live node", func() bool {
		if len(led.ran(f2)) > 0 {
			return true
		}
		base.Advance(50 * time.Millisecond)
		return false
	})
	if got := led.ran(f2); len(got) != 1 || got[0] == dead {
		t.Fatalf("fire time 2 ran on %v; %s is dead", got, dead)
	}
	if got := led.ran(f1); len(got) != 1 {
		t.Fatalf("fire time 1 ran on %v, want once (on %s, lost)", got, dead)
	}
	testkit.Eventually(t, 20*time.Second, "the dead node's run to show as lost", func() bool {
		st, err := live.Job(context.Background(), "tick")
		if err != nil || len(st.History) < 2 {
			return false
		}
		h := st.History
		return h[0].Outcome == OutcomeLost && h[0].Node == dead && h[1].Outcome == OutcomeSucceeded
	})
}

// A job whose runner no live node has waits, visibly, and runs once
// (not once per missed slot) when a node registers it.
func TestClusterWaitsForRunner(t *testing.T) {
	base := NewFakeClock(t0)
	led := newLedger()
	_, _, scheds := startCluster(t, clusterOpts{seed: 22, clocks: []Clock{base, base, base}})
	ctx := context.Background()
	mustSchedule(t, scheds[0], Job{ID: "rare", Runner: "rare", Mode: RunOncePerCluster, Schedule: Every(time.Minute, t0.Add(time.Minute))})
	waitCopies(t, "rare", scheds...)
	for range 10 {
		base.Advance(time.Minute)
		waitIdle(t, scheds...)
	}
	st := mustStatus(t, scheds[1], "rare")
	if st.State != StateWaiting || len(st.History) != 0 || len(st.Runners) != 0 {
		t.Fatalf("status %+v", st)
	}
	if err := scheds[1].RunNow(ctx, "rare"); !errors.Is(err, ErrNoRunner) {
		t.Fatalf("run-now: %v", err)
	}
	if err := scheds[2].Register("rare", led.runner(nil)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the job to run on n3", func() bool { return led.distinct() == 1 })
	waitIdle(t, scheds...)
	if got := led.ran(t0.Add(time.Minute)); len(got) != 1 || got[0] != "n3" {
		t.Fatalf("ran on %v", got)
	}
	testkit.Eventually(t, 10*time.Second, "n1 to see n3's runner", func() bool {
		st := mustStatus(t, scheds[0], "rare")
		return st.State == StateScheduled && len(st.Runners) == 1 && st.Runners[0] == "n3" && st.Misfires == 1
	})
}

// Operators act on any node: pause, resume, run-now and delete.
func TestClusterOperators(t *testing.T) {
	base := NewFakeClock(t0)
	led := newLedger()
	_, _, scheds := startCluster(t, clusterOpts{seed: 23, clocks: []Clock{base, base, base},
		runner: func(int) Runner { return led.runner(nil) }})
	ctx := context.Background()
	mustSchedule(t, scheds[0], clusterJob("j", Every(time.Minute, t0.Add(time.Minute))))
	// The same definition again (another node's start) changes nothing.
	before := mustStatus(t, scheds[0], "j").Version
	mustSchedule(t, scheds[1], clusterJob("j", Every(time.Minute, t0.Add(time.Minute))))
	if v := mustStatus(t, scheds[2], "j").Version; v != before {
		t.Fatalf("rescheduling the same job wrote it: version %d → %d", before, v)
	}
	waitCopies(t, "j", scheds...)
	if err := scheds[1].Pause(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		base.Advance(time.Minute)
		waitIdle(t, scheds...)
	}
	if led.distinct() != 0 {
		t.Fatal("a paused job ran")
	}
	if err := scheds[2].RunNow(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the run-now", func() bool { return led.distinct() == 1 })
	if err := scheds[0].Resume(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the catch-up run", func() bool { return led.distinct() == 2 })
	waitIdle(t, scheds...)
	list, err := scheds[2].Jobs(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "j" || len(list[0].History) != 2 {
		t.Fatalf("jobs %+v %v", list, err)
	}
	testkit.Eventually(t, 10*time.Second, "n3's copy to match the store", func() bool {
		snap := scheds[2].Snapshot()
		return len(snap) == 1 && snap[0].Version == list[0].Version
	})
	if err := scheds[0].Delete(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "every node to drop the job", func() bool {
		for _, s := range scheds {
			s.mu.Lock()
			_, ok := s.clustered["j"]
			s.mu.Unlock()
			if ok {
				return false
			}
		}
		return true
	})
	if _, err := scheds[1].Job(ctx, "j"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted job: %v", err)
	}
	if err := scheds[1].Delete(ctx, "j"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
	base.Advance(time.Hour)
	waitIdle(t, scheds...)
	if led.distinct() != 2 {
		t.Fatal("a deleted job ran")
	}
}

// A lost announcement is caught by the bus's missed-message report, which
// refreshes at once: the periodic refresh never runs here (the fake clock
// stands still).
func TestClusterMissedAnnouncementRefreshes(t *testing.T) {
	base := NewFakeClock(t0)
	net, _, scheds := startCluster(t, clusterOpts{seed: 24, clocks: []Clock{base, base, base}})
	testkit.Eventually(t, 10*time.Second, "the start-up refreshes", func() bool {
		return sumStats(scheds, func(s *Stats) uint64 { return s.Refreshes.Load() }) >= 3
	})
	net.SetFaults(memnet.Faults{DropRate: 1, Match: func(tr memnet.Traffic) bool {
		return tr.Kind == memnet.Frame && tr.Frame.Type == "bus"
	}})
	mustSchedule(t, scheds[0], clusterJob("quiet", Every(time.Hour, t0.Add(time.Hour))))
	testkit.Eventually(t, 5*time.Second, "the announcement to be dropped", func() bool { return net.Stats().Frames.Dropped >= 2 })
	net.SetFaults(memnet.Faults{})
	waitCopies(t, "quiet", scheds...)
	for _, s := range scheds[1:] {
		if s.Stats().MissedReports.Load() == 0 || s.Stats().AnnouncementsReceived.Load() != 0 {
			t.Fatalf("%s learnt of the job without a missed-message report: %s", s.Name(), s.describe())
		}
	}
}
