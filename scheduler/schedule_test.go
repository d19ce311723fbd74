package scheduler

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// fireTimes lists the first n fire times after from, in loc, as
// "2006-01-02 15:04 MST".
func fireTimes(t *testing.T, s Schedule, from time.Time, n int, loc *time.Location) []string {
	t.Helper()
	var out []string
	for range n {
		next, ok := s.Next(from)
		if !ok {
			break
		}
		if !next.After(from) {
			t.Fatalf("Next(%v) = %v: not after", from, next)
		}
		out = append(out, next.In(loc).Format("2006-01-02 15:04 MST"))
		from = next
	}
	return out
}

func TestCronAcrossDST(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	for _, tc := range []struct {
		name string
		expr string
		from time.Time
		want []string
	}{
		{"daily in the skipped hour is skipped (spring forward)", "30 2 * * *", time.Date(2026, 3, 7, 12, 0, 0, 0, ny),
			[]string{"2026-03-09 02:30 EDT", "2026-03-10 02:30 EDT"}},
		{"daily before the change", "30 1 * * *", time.Date(2026, 3, 7, 12, 0, 0, 0, ny),
			[]string{"2026-03-08 01:30 EST", "2026-03-09 01:30 EDT", "2026-03-10 01:30 EDT"}},
		{"hourly across spring forward keeps real hours", "0 * * * *", time.Date(2026, 3, 8, 0, 30, 0, 0, ny),
			[]string{"2026-03-08 01:00 EST", "2026-03-08 03:00 EDT", "2026-03-08 04:00 EDT"}},
		{"daily in the repeated hour fires once (fall back)", "30 1 * * *", time.Date(2026, 10, 31, 12, 0, 0, 0, ny),
			[]string{"2026-11-01 01:30 EDT", "2026-11-02 01:30 EST", "2026-11-03 01:30 EST"}},
		{"hourly across fall back fires in both hours", "0 * * * *", time.Date(2026, 11, 1, 0, 30, 0, 0, ny),
			[]string{"2026-11-01 01:00 EDT", "2026-11-01 01:00 EST", "2026-11-01 02:00 EST"}},
		{"weekdays at 9 with seconds", "0 0 9 * * MON-FRI", time.Date(2026, 3, 6, 10, 0, 0, 0, ny),
			[]string{"2026-03-09 09:00 EDT", "2026-03-10 09:00 EDT"}},
		{"descriptor", "@daily", time.Date(2026, 11, 1, 0, 30, 0, 0, ny),
			[]string{"2026-11-02 00:00 EST", "2026-11-03 00:00 EST"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fireTimes(t, Cron(tc.expr, "America/New_York"), tc.from, len(tc.want), ny)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestCronDefaultsToUTC(t *testing.T) {
	next, ok := Cron("0 12 * * *", "").Next(time.Date(2026, 1, 1, 13, 0, 0, 0, time.UTC))
	if !ok || !next.Equal(time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("got %v %v", next, ok)
	}
}

func TestIntervalAndOnce(t *testing.T) {
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	every := Every(time.Minute, first)
	for _, tc := range []struct {
		after, want time.Time
	}{
		{first.Add(-time.Hour), first},
		{first, first.Add(time.Minute)},
		{first.Add(90 * time.Second), first.Add(2 * time.Minute)},
		{first.Add(2 * time.Minute), first.Add(3 * time.Minute)},
	} {
		if got, ok := every.Next(tc.after); !ok || !got.Equal(tc.want) {
			t.Errorf("Next(%v) = %v, want %v", tc.after, got, tc.want)
		}
	}
	once := Once(first)
	if got, ok := once.Next(first.Add(-time.Second)); !ok || !got.Equal(first) {
		t.Errorf("once before: %v %v", got, ok)
	}
	if _, ok := once.Next(first); ok {
		t.Error("once fired twice")
	}
}

func TestScheduleValidation(t *testing.T) {
	for _, s := range []Schedule{
		{}, Cron("61 * * * *", ""), Cron("* * * * *", "Mars/Olympus"), Every(0, time.Now()),
		Every(time.Second, time.Time{}), Once(time.Time{}),
	} {
		if _, err := s.compile(); err == nil {
			t.Errorf("%+v: accepted", s)
		}
	}
}
