package scheduler

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

var fires = flag.Int("scheduler.fires", 2000, "fire times in the fake-clock exactly-once test (the issue's figure is 2000)")

// ledger records every run in a cluster test, by fire time.
type ledger struct {
	mu    sync.Mutex
	runs  map[time.Time][]string // fire time → nodes that ran it
	order []time.Time
}

func newLedger() *ledger { return &ledger{runs: map[time.Time][]string{}} }

func (l *ledger) runner(hook func(Request) error) RunnerFunc {
	return func(ctx context.Context, req Request) error {
		l.mu.Lock()
		f := req.FireTime.UTC()
		if l.runs[f] == nil {
			l.order = append(l.order, f)
		}
		l.runs[f] = append(l.runs[f], req.Node)
		l.mu.Unlock()
		if hook != nil {
			return hook(req)
		}
		return nil
	}
}

func (l *ledger) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.runs)
}

func (l *ledger) ran(f time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.runs[f.UTC()])
}

// check fails the test unless each of the want fire times ran exactly
// once and nothing else ran but fire times after the last wanted (a node
// whose clock runs ahead may have run those already), each once; it
// returns the runs per node of the wanted fire times.
func (l *ledger) check(t *testing.T, want []time.Time) map[string]int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	perNode := map[string]int{}
	wanted := map[time.Time]bool{}
	for _, f := range want {
		wanted[f.UTC()] = true
		switch nodes := l.runs[f.UTC()]; len(nodes) {
		case 0:
			t.Errorf("fire time %v never ran", f)
		case 1:
			perNode[nodes[0]]++
		default:
			t.Errorf("fire time %v ran %d times, on %v", f, len(nodes), nodes)
		}
	}
	last := want[len(want)-1].UTC()
	for f, nodes := range l.runs {
		if !wanted[f] && (!f.After(last) || len(nodes) != 1) {
			t.Errorf("unexpected fire time %v ran on %v", f, nodes)
		}
	}
	return perNode
}

type clusterOpts struct {
	seed    uint64
	clocks  []Clock // per node; default one RealClock
	tweak   func(i int, c *Config)
	runner  func(i int) Runner
	members []*clustertest.Member
}

// startCluster starts 3 nodes with stores and a scheduler on each, runner
// "r" registered on each. Schedulers close before their stores.
func startCluster(t testing.TB, o clusterOpts) (*memnet.Network, []*clustertest.Member, []*Scheduler) {
	t.Helper()
	net := memnet.New(o.seed)
	t.Cleanup(func() { net.Close() })
	members := clustertest.StartWithStores(t, net, 3)
	scheds := make([]*Scheduler, len(members))
	for i, m := range members {
		cfg := NodeConfig(m.Node, m.Store)
		cfg.Logger = testkit.Logger(t).With("node", m.Node.Name())
		if len(o.clocks) > 0 {
			cfg.Clock = o.clocks[i]
		}
		if o.tweak != nil {
			o.tweak(i, &cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if o.runner != nil && o.runner(i) != nil {
			if err := s.Register("r", o.runner(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		scheds[i] = s
	}
	return net, members, scheds
}

// waitCopies waits until every scheduler holds a copy of job id.
func waitCopies(t testing.TB, id string, scheds ...*Scheduler) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "every node to know "+id, func() bool {
		for _, s := range scheds {
			s.mu.Lock()
			_, ok := s.clustered[id]
			s.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
}

func clusterJob(id string, s Schedule) Job {
	return Job{ID: id, Runner: "r", Mode: RunOncePerCluster, Schedule: s}
}

// Exactly once across three nodes on a fast fake clock: the clock moves
// one interval at a time and every fire time runs exactly once, on some
// node; with bus announcements dropped (the nodes then claim with stale
// copies, lose, and re-read), and with the nodes' clocks skewed by up to
// a second.
func TestClusterExactlyOnceFakeClock(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drop    float64
		offsets []time.Duration
	}{
		{"perfect bus", 0, nil},
		{"30% of bus messages dropped", 0.3, nil},
		{"clocks skewed by up to 1s", 0, []time.Duration{0, time.Second, -700 * time.Millisecond}},
		{"skewed clocks and dropped messages", 0.3, []time.Duration{300 * time.Millisecond, -time.Second, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := NewFakeClock(t0)
			clocks := []Clock{base, base, base}
			for i, off := range tc.offsets {
				clocks[i] = OffsetClock{Clock: base, Offset: off}
			}
			led := newLedger()
			net, _, scheds := startCluster(t, clusterOpts{seed: 11, clocks: clocks, runner: func(int) Runner { return led.runner(nil) }})
			if tc.drop > 0 {
				net.SetFaults(memnet.Faults{DropRate: tc.drop, Match: func(tr memnet.Traffic) bool {
					return tr.Kind == memnet.Frame && tr.Frame.Type == "bus"
				}})
			}
			const every = time.Second
			mustSchedule(t, scheds[0], clusterJob("tick", Every(every, t0.Add(every))))
			waitCopies(t, "tick", scheds...)
			n := *fires
			if testing.Short() {
				n = 50
			}
			claimErrors := func() (n uint64) {
				for _, s := range scheds {
					n += s.Stats().ClaimErrors.Load()
				}
				return n
			}
			var want []time.Time
			quarters, late := 0, 0 // the clock's quarter steps so far; fire times run late
			for k := 1; k <= n; k++ {
				errs := claimErrors()
				// Quarter steps: with skewed clocks, nodes become due at
				// different moments of the interval.
				for ; quarters < 4*k; quarters++ {
					base.Advance(every / 4)
					waitIdle(t, scheds...)
				}
				f := t0.Add(time.Duration(k) * every)
				want = append(want, f)
				got := led.ran(f)
				// A claim that met a store error (no leader for a while:
				// raft runs on real time, which a loaded machine
				// stretches) is tried again RetryInterval (250 ms) later
				// on the test's clock: the run is late, not lost. The
				// clock moves on by quarters, short of the next fire time.
				if len(got) == 0 && claimErrors() > errs {
					late++
					for ; len(got) == 0 && quarters < 4*k+3; quarters++ {
						base.Advance(every / 4)
						waitIdle(t, scheds...)
						got = led.ran(f)
					}
				}
				if len(got) != 1 {
					for _, s := range scheds {
						t.Log(s.describe())
					}
					t.Fatalf("fire time %d (%v) ran on %v after the clock passed it (%d claim errors meanwhile)", k, f, got, claimErrors()-errs)
				}
			}
			if late > 0 {
				t.Logf("%d fire times ran late, after a claim met a store error (%d claim errors in all)", late, claimErrors())
			}
			per := led.check(t, want)
			var claims, conflicts uint64
			for _, s := range scheds {
				claims += s.Stats().Claims.Load()
				conflicts += s.Stats().ClaimConflicts.Load()
			}
			t.Logf("%d fire times: runs per node %v; %d claims, %d lost claims; bus %v", n, per, claims, conflicts, net.Stats().Frames)
		})
	}
}

// Exactly once on the real clock: 200 fire times 50 ms apart.
func TestClusterExactlyOnceRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s of real time")
	}
	for _, drop := range []float64{0, 0.2} {
		t.Run(fmt.Sprintf("drop=%v", drop), func(t *testing.T) {
			led := newLedger()
			// A shared machine can stall the process for seconds; missed
			// fire times must run late, not be coalesced.
			net, _, scheds := startCluster(t, clusterOpts{seed: 12, runner: func(int) Runner { return led.runner(nil) },
				tweak: func(_ int, c *Config) { c.MisfireThreshold = time.Hour }})
			if drop > 0 {
				net.SetFaults(memnet.Faults{DropRate: drop, Match: func(tr memnet.Traffic) bool {
					return tr.Kind == memnet.Frame && tr.Frame.Type == "bus"
				}})
			}
			const every, n = 50 * time.Millisecond, 200
			first := time.Now().Add(500 * time.Millisecond).Truncate(time.Millisecond)
			sched := Every(every, first)
			mustSchedule(t, scheds[0], clusterJob("tick", sched))
			// Fire times that passed before the job was written are
			// skipped (on a loaded machine the write can take longer
			// than the 500 ms lead): the runs start at the first fire
			// time at or after its creation.
			created := mustStatus(t, scheds[0], "tick").Created
			start, _ := sched.Next(created.Add(-time.Nanosecond))
			testkit.Eventually(t, n*every+20*time.Second, "200 fire times", func() bool { return led.distinct() >= n })
			if err := scheds[0].Pause(context.Background(), "tick"); err != nil {
				t.Fatal(err)
			}
			waitIdle(t, scheds...)
			var want []time.Time
			for f := start; led.distinct() > len(want); f = f.Add(every) {
				want = append(want, f)
			}
			per := led.check(t, want)
			var misfires uint64
			for _, s := range scheds {
				misfires += s.Stats().Misfires.Load()
			}
			if t.Failed() {
				for _, s := range scheds {
					t.Logf("%s; runs %d", s.describe(), s.Stats().Runs.Load())
				}
				t.Logf("first fire time %v (job created at %v)", start, created)
			}
			t.Logf("%d fire times: runs per node %v, misfires %d", len(want), per, misfires)
		})
	}
}
