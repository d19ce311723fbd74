package scheduler

import (
	"sort"
	"sync"
	"time"
)

// Clock is the scheduler's time: when jobs are due, when the periodic
// refresh runs, and the times written into run history. Implementations
// must be safe for concurrent use.
type Clock interface {
	Now() time.Time
	// NewTimerAt returns a timer that sends the time on its channel once
	// the clock reads at or later (at once if it already does). The
	// deadline is absolute so that a clock moved between reading Now and
	// making the timer cannot make it fire late.
	NewTimerAt(at time.Time) Timer
}

// Timer is a one-shot timer made by a Clock.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
}

// RealClock is the system clock.
type RealClock struct{}

func (RealClock) Now() time.Time { return time.Now() }

func (RealClock) NewTimerAt(at time.Time) Timer { return realTimer{time.NewTimer(time.Until(at))} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

// OffsetClock is another clock shifted by Offset: a node whose clock runs
// ahead (positive) or behind. For clock-skew tests.
type OffsetClock struct {
	Clock  Clock
	Offset time.Duration
}

func (c OffsetClock) Now() time.Time { return c.Clock.Now().Add(c.Offset) }

func (c OffsetClock) NewTimerAt(at time.Time) Timer { return c.Clock.NewTimerAt(at.Add(-c.Offset)) }

// FakeClock is a manual clock for deterministic tests: time stands still
// until Advance or Set moves it, and timers fire when it passes their
// deadline, in deadline order. Safe for concurrent use.
type FakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

// NewFakeClock returns a clock stopped at start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimerAt makes a timer that fires when the clock reaches at.
func (c *FakeClock) NewTimerAt(at time.Time) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: at, ch: make(chan time.Time, 1)}
	if !at.After(c.now) {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock forward by d and fires the timers it passes.
func (c *FakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to t (never backwards) and fires the timers it
// passes.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(c.now) {
			kept = append(kept, tm)
			continue
		}
		tm.ch <- c.now // buffered, sent once
	}
	c.timers = kept
}

// Timers is the number of timers waiting: a test can wait until the
// scheduler is idle before it advances the clock.
func (c *FakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

type fakeTimer struct {
	c  *FakeClock
	at time.Time
	ch chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}
