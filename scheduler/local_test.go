package scheduler

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func localJob(id string, s Schedule) Job {
	return Job{ID: id, Runner: "r", Mode: RunLocally, Schedule: s}
}

func TestLocalInterval(t *testing.T) {
	clock := NewFakeClock(t0)
	rec := &recorder{}
	s := localScheduler(t, clock, rec)
	mustSchedule(t, s, localJob("tick", Every(time.Minute, t0.Add(time.Minute))))
	for i := 1; i <= 5; i++ {
		clock.Advance(time.Minute)
		waitIdle(t, s)
		if rec.count() != i {
			t.Fatalf("after %d minutes: %d runs", i, rec.count())
		}
	}
	for i, f := range rec.fires() {
		if want := t0.Add(time.Duration(i+1) * time.Minute); !f.Equal(want) {
			t.Fatalf("run %d fired for %v, want %v", i, f, want)
		}
	}
	st := mustStatus(t, s, "tick")
	if st.State != StateScheduled || !st.NextRun.Equal(t0.Add(6*time.Minute)) || len(st.History) != 5 {
		t.Fatalf("status %+v", st)
	}
	if h := st.History[4]; h.Outcome != OutcomeSucceeded || h.Node != "solo" || !h.FireTime.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("last run %+v", h)
	}
}

func TestLocalRunOnce(t *testing.T) {
	clock := NewFakeClock(t0)
	rec := &recorder{}
	s := localScheduler(t, clock, rec)
	mustSchedule(t, s, localJob("once", Once(t0.Add(30*time.Second))))
	clock.Advance(29 * time.Second)
	waitIdle(t, s)
	if rec.count() != 0 {
		t.Fatal("ran early")
	}
	for range 3 {
		clock.Advance(time.Minute)
		waitIdle(t, s)
	}
	if rec.count() != 1 {
		t.Fatalf("%d runs, want 1", rec.count())
	}
	if st := mustStatus(t, s, "once"); st.State != StateDone || !st.NextRun.IsZero() {
		t.Fatalf("status %+v", st)
	}
	// A run-once time in the past runs at once.
	mustSchedule(t, s, localJob("late", Once(t0)))
	testkit.Eventually(t, 5*time.Second, "the late run-once job", func() bool { return rec.count() == 2 })
}

// A long stall (the node suspended, the cluster down) costs one run, not
// one per missed slot; then the schedule resumes on its grid.
func TestLocalMisfireAfterStall(t *testing.T) {
	clock := NewFakeClock(t0)
	rec := &recorder{}
	s := localScheduler(t, clock, rec)
	mustSchedule(t, s, localJob("tick", Every(time.Minute, t0.Add(time.Minute))))
	clock.Advance(10*time.Hour + 30*time.Second)
	waitIdle(t, s)
	if rec.count() != 1 {
		t.Fatalf("%d runs after the stall, want 1", rec.count())
	}
	st := mustStatus(t, s, "tick")
	if want := t0.Add(10*time.Hour + time.Minute); !st.NextRun.Equal(want) || st.Misfires != 1 {
		t.Fatalf("next %v misfires %d, want %v and 1", st.NextRun, st.Misfires, want)
	}
	clock.Advance(30 * time.Second)
	waitIdle(t, s)
	if f := rec.fires(); len(f) != 2 || !f[1].Equal(t0.Add(10*time.Hour+time.Minute)) {
		t.Fatalf("fires %v", f)
	}
}

func TestLocalPauseResume(t *testing.T) {
	clock := NewFakeClock(t0)
	rec := &recorder{}
	s := localScheduler(t, clock, rec)
	ctx := context.Background()
	mustSchedule(t, s, localJob("tick", Every(time.Minute, t0.Add(time.Minute))))
	clock.Advance(time.Minute)
	waitIdle(t, s)
	if err := s.Pause(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, s, "tick"); st.State != StatePaused {
		t.Fatalf("state %s", st.State)
	}
	for range 5 {
		clock.Advance(time.Minute)
		waitIdle(t, s)
	}
	if rec.count() != 1 {
		t.Fatalf("%d runs while paused", rec.count()-1)
	}
	if err := s.Resume(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, s)
	if rec.count() != 2 {
		t.Fatalf("resume after missed slots: %d runs, want one catch-up run", rec.count()-1)
	}
	clock.Advance(time.Minute)
	waitIdle(t, s)
	if f := rec.fires(); len(f) != 3 || !f[2].Equal(t0.Add(7*time.Minute)) {
		t.Fatalf("fires %v", f)
	}
	if err := s.Pause(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pause of a missing job: %v", err)
	}
}

func TestLocalRunNow(t *testing.T) {
	clock := NewFakeClock(t0)
	rec := &recorder{}
	s := localScheduler(t, clock, rec)
	mustSchedule(t, s, localJob("daily", Cron("0 3 * * *", "Europe/Paris")))
	if err := s.RunNow(context.Background(), "daily"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the run-now", func() bool { return rec.count() == 1 })
	waitIdle(t, s)
	if f := rec.fires()[0]; !f.Equal(t0) {
		t.Fatalf("run-now fire time %v, want the request time %v", f, t0)
	}
	st := mustStatus(t, s, "daily")
	if want, _ := Cron("0 3 * * *", "Europe/Paris").Next(t0); !st.NextRun.Equal(want) || !st.RunNowAt.IsZero() {
		t.Fatalf("run-now moved the schedule: %+v", st)
	}
}

// A failing or panicking job is recorded as failed and keeps its schedule.
func TestLocalFailuresRecorded(t *testing.T) {
	clock := NewFakeClock(t0)
	rec := &recorder{fail: func(n int, _ Request) error {
		switch n {
		case 1:
			panic("kaboom")
		case 2:
			return errBoom
		}
		return nil
	}}
	s := localScheduler(t, clock, rec)
	mustSchedule(t, s, localJob("flaky", Every(time.Minute, t0.Add(time.Minute))))
	for range 3 {
		clock.Advance(time.Minute)
		waitIdle(t, s)
	}
	h := mustStatus(t, s, "flaky").History
	if len(h) != 3 || h[0].Outcome != OutcomeFailed || h[1].Outcome != OutcomeFailed || h[2].Outcome != OutcomeSucceeded {
		t.Fatalf("history %+v", h)
	}
	if h[1].Error != "boom" || !strings.HasPrefix(h[0].Error, "panic: kaboom") {
		t.Fatalf("errors %q %q", h[0].Error, h[1].Error)
	}
	if s.Stats().Failures.Load() != 2 || s.Stats().Runs.Load() != 3 {
		t.Fatalf("stats: %d failures of %d runs", s.Stats().Failures.Load(), s.Stats().Runs.Load())
	}
}

func TestLocalWaitsForRunner(t *testing.T) {
	clock := NewFakeClock(t0)
	s := localScheduler(t, clock, nil)
	ctx := context.Background()
	mustSchedule(t, s, Job{ID: "j", Runner: "later", Mode: RunLocally, Schedule: Every(time.Minute, t0.Add(time.Minute))})
	clock.Advance(3 * time.Minute)
	waitIdle(t, s)
	if st := mustStatus(t, s, "j"); st.State != StateWaiting || len(st.History) != 0 {
		t.Fatalf("status %+v", st)
	}
	if err := s.RunNow(ctx, "j"); !errors.Is(err, ErrNoRunner) {
		t.Fatalf("run-now without a runner: %v", err)
	}
	rec := &recorder{}
	if err := s.Register("later", rec); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the waiting job to run", func() bool { return rec.count() == 1 })
}

func TestScheduleRejects(t *testing.T) {
	s := localScheduler(t, NewFakeClock(t0), &recorder{})
	ctx := context.Background()
	every := Every(time.Minute, t0)
	for _, j := range []Job{
		{ID: "", Runner: "r", Mode: RunLocally, Schedule: every},
		{ID: "a/b", Runner: "r", Mode: RunLocally, Schedule: every},
		{ID: "a", Mode: RunLocally, Schedule: every},
		{ID: "a", Runner: "r", Schedule: every},
		{ID: "a", Runner: "r", Mode: RunLocally, Schedule: Cron("nope", "")},
		{ID: "a", Runner: "r", Mode: RunLocally, Schedule: every, Params: make([]byte, 17<<10)},
	} {
		if err := s.Schedule(ctx, j); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", j, err)
		}
	}
	if err := s.Schedule(ctx, Job{ID: "c", Runner: "r", Mode: RunOncePerCluster, Schedule: every}); !errors.Is(err, ErrNoStore) {
		t.Errorf("clustered without a store: %v", err)
	}
}

func TestCloseStopsRunningJobs(t *testing.T) {
	clock := NewFakeClock(t0)
	started := make(chan struct{})
	s := localScheduler(t, clock, RunnerFunc(func(ctx context.Context, _ Request) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}))
	mustSchedule(t, s, localJob("long", Once(t0)))
	<-started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Schedule(context.Background(), localJob("x", Once(t0))); !errors.Is(err, ErrClosed) {
		t.Fatalf("schedule after close: %v", err)
	}
}

// A daily job in New York across both 2026 changes, driven by a fake
// clock in quarter-hour steps.
func TestLocalCronAcrossDST(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	for _, tc := range []struct {
		name  string
		expr  string
		start time.Time
		want  []string
	}{
		{"spring forward", "30 2 * * *", time.Date(2026, 3, 7, 0, 0, 0, 0, ny),
			[]string{"2026-03-07 02:30 EST", "2026-03-09 02:30 EDT"}},
		{"fall back", "30 1 * * *", time.Date(2026, 10, 31, 0, 0, 0, 0, ny),
			[]string{"2026-10-31 01:30 EDT", "2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewFakeClock(tc.start)
			rec := &recorder{}
			s := localScheduler(t, clock, rec)
			mustSchedule(t, s, localJob("daily", Cron(tc.expr, "America/New_York")))
			end := tc.start.Add(3 * 24 * time.Hour)
			for clock.Now().Before(end) {
				clock.Advance(15 * time.Minute)
				waitIdle(t, s)
			}
			var got []string
			for _, f := range rec.fires() {
				got = append(got, f.In(ny).Format("2006-01-02 15:04 MST"))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("fired %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("fired %v, want %v", got, tc.want)
				}
			}
		})
	}
}
