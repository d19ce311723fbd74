package scheduler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// idle reports whether nothing is due or running on this node.
func (s *Scheduler) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.allLocked() {
		if e.running {
			return false
		}
	}
	return len(s.queue) == 0 || s.queue[0].due.After(s.clock.Now())
}

// describe says what the scheduler holds, for a failing test.
func (s *Scheduler) describe() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := fmt.Sprintf("%s at %v: queue %d;", s.cfg.Name, s.clock.Now().Format(time.RFC3339Nano), len(s.queue))
	for _, e := range s.allLocked() {
		out += fmt.Sprintf(" [%s v%d running=%v due=%v queued=%v paused=%v next=%v]", e.rec.Job.ID, e.version, e.running,
			e.due.Format(time.RFC3339Nano), e.idx >= 0, e.rec.Paused, e.rec.NextRun.Format(time.RFC3339Nano))
	}
	st := &s.stats
	return out + fmt.Sprintf(" claims %d conflicts %d errors %d", st.Claims.Load(), st.ClaimConflicts.Load(), st.ClaimErrors.Load())
}

func waitIdle(t testing.TB, ss ...*Scheduler) {
	t.Helper()
	// testkit.Eventually polls every 5 ms; the fake-clock tests wait
	// thousands of times for a few milliseconds each, so poll finer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		idle := true
		for _, s := range ss {
			idle = idle && s.idle()
		}
		if idle {
			return
		}
		if time.Now().After(deadline) {
			for _, s := range ss {
				t.Log(s.describe())
			}
			if os.Getenv("SHOAL_STALL_DUMP") != "" {
				buf := make([]byte, 8<<20)
				os.WriteFile(os.Getenv("SHOAL_STALL_DUMP"), buf[:runtime.Stack(buf, true)], 0o644)
			}
			t.Fatal("timed out after 10s waiting for the schedulers to be idle")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// recorder is a runner that records its runs; fail, if set, decides a
// run's outcome.
type recorder struct {
	mu   sync.Mutex
	runs []Request
	fail func(n int, req Request) error
}

func (r *recorder) Run(ctx context.Context, req Request) error {
	r.mu.Lock()
	r.runs = append(r.runs, req)
	n, fail := len(r.runs), r.fail
	r.mu.Unlock()
	if fail != nil {
		return fail(n, req)
	}
	return nil
}

func (r *recorder) fires() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]time.Time, len(r.runs))
	for i, q := range r.runs {
		out[i] = q.FireTime
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}

// localScheduler is a started scheduler without a store, on clock, with
// rec registered as runner "r".
func localScheduler(t testing.TB, clock Clock, rec Runner) *Scheduler {
	t.Helper()
	s, err := New(Config{Name: "solo", Clock: clock, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if rec != nil {
		if err := s.Register("r", rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mustSchedule schedules j as a client would: a write whose outcome is
// unknown (raft lost its leader while committing it: 1 of 200 runs of
// TestClusterExactlyOnceFakeClock on a machine at load 30-50) or that
// found no leader is asked again, which Schedule allows (the same job
// again changes nothing), for up to a minute.
func mustSchedule(t testing.TB, s *Scheduler, j Job) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := s.Schedule(context.Background(), j)
		if err == nil {
			return
		}
		if !(errors.Is(err, cp.ErrIndeterminate) || errors.Is(err, cp.ErrNoLeader)) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		t.Logf("scheduling %s again: %v", j.ID, err)
	}
}

func mustStatus(t testing.TB, s *Scheduler, id string) Status {
	t.Helper()
	st, err := s.Job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var errBoom = errors.New("boom")
