package scheduler

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// lateness records, per run, how late it started after its fire time.
type lateness struct {
	mu   sync.Mutex
	late testkit.Latencies
	runs map[time.Time]started // if not nil: every run, by fire time
}

type started struct {
	node string
	at   time.Time
}

func (l *lateness) runner() RunnerFunc {
	return func(ctx context.Context, req Request) error {
		now := time.Now()
		l.mu.Lock()
		l.late = append(l.late, now.Sub(req.FireTime))
		if l.runs != nil {
			l.runs[req.FireTime] = started{req.Node, now}
		}
		l.mu.Unlock()
		return nil
	}
}

func (l *lateness) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.late)
}

func sumStats(scheds []*Scheduler, f func(*Stats) uint64) (n uint64) {
	for _, s := range scheds {
		n += f(s.Stats())
	}
	return n
}

// BenchmarkFireLateness: one interval job (20 ms) on a 3-node in-process
// cluster (memnet, in-memory raft), real clock. Each op is one fire time;
// lateness is from the fire time to the runner's start (timer wake-up,
// the claim's raft commit, the hand-off to a worker).
func BenchmarkFireLateness(b *testing.B) { staggerArms(b, benchFireLateness) }

// staggerArms runs a benchmark with the default claim stagger and without.
func staggerArms(b *testing.B, f func(b *testing.B, stagger time.Duration)) {
	for _, arm := range []struct {
		name    string
		stagger time.Duration
	}{{"stagger=20ms", 0}, {"stagger=off", -1}} {
		b.Run(arm.name, func(b *testing.B) { f(b, arm.stagger) })
	}
}

func withStagger(d time.Duration) func(int, *Config) {
	return func(_ int, c *Config) { c.ClaimStagger = d }
}

func benchFireLateness(b *testing.B, stagger time.Duration) {
	l := &lateness{}
	_, _, scheds := startCluster(b, clusterOpts{seed: 31, runner: func(int) Runner { return l.runner() }, tweak: withStagger(stagger)})
	const every = 20 * time.Millisecond
	first := time.Now().Add(300 * time.Millisecond)
	b.ResetTimer()
	mustSchedule(b, scheds[0], clusterJob("tick", Every(every, first)))
	testkit.Eventually(b, time.Duration(b.N)*every+30*time.Second, "b.N runs", func() bool { return l.n() >= b.N })
	b.StopTimer()
	quiesceJob(b, scheds, "tick")
	l.mu.Lock()
	late := slices.Clone(l.late[:b.N])
	l.mu.Unlock()
	late.Report(b, "lateness")
	b.ReportMetric(float64(sumStats(scheds, func(s *Stats) uint64 { return s.ClaimConflicts.Load() }))/float64(b.N), "lost-claims/fire")
}

// quiesceJob pauses a job and waits until no node is working on it: a
// linearizable read still pending at the leader when the stores close can
// hang the store's shutdown (cp's documented raft limit), so benchmarks
// stop their traffic first.
func quiesceJob(b testing.TB, scheds []*Scheduler, id string) {
	if err := scheds[0].Pause(context.Background(), id); err != nil {
		b.Fatal(err)
	}
	waitIdle(b, scheds...)
}

func quiesce(b testing.TB, scheds []*Scheduler, jobs int) {
	for i := range jobs {
		if err := scheds[0].Pause(context.Background(), "j"+string(rune('A'+i))); err != nil {
			b.Fatal(err)
		}
	}
	waitIdle(b, scheds...)
}

// BenchmarkClaimThroughput: 64 jobs due every millisecond on a 3-node
// in-process cluster, 4 workers per node: the cluster claims as fast as
// it can. Each op is one successful claim (a CompareAndSet through raft,
// plus the write that records the run's outcome).
func BenchmarkClaimThroughput(b *testing.B) { staggerArms(b, benchClaimThroughput) }

func benchClaimThroughput(b *testing.B, stagger time.Duration) {
	l := &lateness{}
	_, _, scheds := startCluster(b, clusterOpts{seed: 32, runner: func(int) Runner { return l.runner() }, tweak: withStagger(stagger)})
	now := time.Now()
	for i := range 64 {
		mustSchedule(b, scheds[i%3], clusterJob("j"+string(rune('A'+i)), Every(time.Millisecond, now)))
	}
	claims := func() uint64 { return sumStats(scheds, func(s *Stats) uint64 { return s.Claims.Load() }) }
	lost := func() uint64 { return sumStats(scheds, func(s *Stats) uint64 { return s.ClaimConflicts.Load() }) }
	// Steady state: count from the moment every job is scheduled.
	c0, l0 := claims(), lost()
	b.ResetTimer()
	start := time.Now()
	testkit.Eventually(b, time.Duration(b.N)*10*time.Millisecond+30*time.Second, "b.N claims", func() bool { return claims() >= c0+uint64(b.N) })
	elapsed := time.Since(start)
	b.StopTimer()
	n, nl := claims()-c0, lost()-l0
	b.ReportMetric(float64(n)/elapsed.Seconds(), "claims/s")
	b.ReportMetric(float64(nl)/float64(n), "lost-claims/claim")
	quiesce(b, scheds, 64)
}

// BenchmarkFailover: an interval job (100 ms) on a 3-node in-process
// cluster; each op kills the node that ran the latest fire time (its
// store, node and raft transport, without leaving) and measures the time
// from the kill to the next run starting on another node. Run with
// -benchtime=5x for the median of 5; each op starts a new cluster.
func BenchmarkFailover(b *testing.B) {
	var failover, late testkit.Latencies
	for range b.N {
		f, lt := failoverOnce(b)
		failover, late = append(failover, f), append(late, lt)
	}
	b.ReportMetric(float64(failover.Quantile(0.5).Microseconds())/1e3, "failover-median-ms")
	b.ReportMetric(float64(failover.Quantile(1).Microseconds())/1e3, "failover-max-ms")
	b.ReportMetric(float64(late.Quantile(0.5).Microseconds())/1e3, "next-run-late-median-ms")
}

// trialTB runs the cleanups registered during one trial at its end, not
// at the end of the benchmark: clusters from earlier trials would
// otherwise keep running and load the machine.
type trialTB struct {
	testing.TB
	cleanups []func()
}

func (t *trialTB) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

func (t *trialTB) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

func failoverOnce(tb testing.TB) (failover, late time.Duration) {
	if bb, ok := tb.(*testing.B); ok {
		bb.StopTimer()
		defer bb.StartTimer()
	}
	b := &trialTB{TB: tb}
	defer b.done()
	l := &lateness{runs: map[time.Time]started{}}
	_, members, scheds := startCluster(b, clusterOpts{seed: 33, runner: func(int) Runner { return l.runner() }})
	const every = 100 * time.Millisecond
	mustSchedule(b, scheds[0], clusterJob("tick", Every(every, time.Now().Add(200*time.Millisecond))))
	testkit.Eventually(b, 10*time.Second, "3 runs", func() bool { return l.n() >= 3 })
	l.mu.Lock()
	var last time.Time
	for f := range l.runs {
		if f.After(last) {
			last = f
		}
	}
	victim := l.runs[last].node
	l.mu.Unlock()
	killed := time.Now()
	for i, m := range members {
		if m.Node.Name() == victim {
			m.Kill()
			scheds[i].Close()
		}
	}
	var next time.Time
	testkit.Eventually(b, 20*time.Second, "a run on a live node", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for f, r := range l.runs {
			if r.at.After(killed) && r.node != victim && (next.IsZero() || f.Before(next)) {
				next = f
			}
		}
		return !next.IsZero()
	})
	l.mu.Lock()
	r := l.runs[next]
	l.mu.Unlock() // the runner takes it: not held while quiescing
	var live []*Scheduler
	for i, m := range members {
		if m.Node.Name() != victim {
			live = append(live, scheds[i])
		}
	}
	quiesceJob(b, live, "tick")
	if d := r.at.Sub(killed); d > 2*time.Second {
		for i, s := range scheds {
			st := s.Stats()
			b.Logf("slow failover %v: victim %s; %s (store %s): claims %d errors %d conflicts %d refresh errors %d", d, victim,
				s.Name(), members[i].Store.Status().Role, st.Claims.Load(), st.ClaimErrors.Load(), st.ClaimConflicts.Load(), st.RefreshErrors.Load())
		}
	}
	return r.at.Sub(killed), r.at.Sub(next)
}
