package main

import (
	"context"
	"log/slog"
	"testing"
)

// The governor lowers GOMAXPROCS after idleProcsAfter idle periods in a
// row, restores it at the first busy one, and does nothing in between.
func TestProcsGovernor(t *testing.T) {
	procs := 4
	g := &procsGovernor{set: func(n int) { procs = n }, restore: func() { procs = 4 }}
	steps := []struct {
		share float64
		times int
		want  string
		procs int
	}{
		{0.01, idleProcsAfter - 1, "", 4},         // not yet
		{0.20, 1, "", 4},                          // a busy period starts the count again
		{0.01, idleProcsAfter - 1, "", 4},         // ...
		{0.01, 1, "lowered", 1},                   // idle long enough
		{0.01, 5, "", 1},                          // stays low
		{idleProcsAbove - 0.01, 3, "", 1},         // light work stays on one processor
		{idleProcsAbove + 0.01, 1, "restored", 4}, // work: every core again
		{0.01, idleProcsAfter - 1, "", 4},         // counts again from zero
		{0.01, 1, "lowered", 1},
	}
	for i, s := range steps {
		for k := 0; k < s.times; k++ {
			got := g.step(s.share)
			want := ""
			if k == s.times-1 {
				want = s.want
			}
			if got != want {
				t.Fatalf("step %d, period %d (share %.2f): %q, want %q", i, k, s.share, got, want)
			}
		}
		if procs != s.procs {
			t.Fatalf("after step %d: GOMAXPROCS %d, want %d", i, procs, s.procs)
		}
	}
}

// An operator's GOMAXPROCS wins: the governor does not start.
func TestIdleProcsOffWithGOMAXPROCS(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	stop := startIdleProcs(context.Background(), slog.Default())
	stop()
	stop()
}
