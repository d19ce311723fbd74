// Package beat lines a process's periodic chores up on one grid of
// instants, so that an idle process wakes once for all that are due
// together instead of once for each.
//
// Why: on an idle node what costs CPU is the process waking, not the work
// done once it is awake. Each wake-up of a Go process makes the kernel
// switch in the thread that waits in the network poller, often a second
// thread that the scheduler starts spinning, and the runtime's monitor
// thread (sysmon), which a syscall wakes from its deep sleep and which
// then polls every 20 µs until the process is idle again: about seven
// context switches and 40-60 µs of CPU on the machines measured
// (BENCHMARKS.md, issue 14). A node's own once-a-second loops (the read
// lease's renewal, the partition table keeper, the reconnect loop, the
// map's sweep, the raft group's reconciliation), each on its own timer
// started at its own moment, woke it separately. Timers that fall due at
// the same instant run in one wake-up: the runtime runs every timer that
// is due when it wakes.
//
// The grid is the multiples of a period since an origin on a whole ten
// seconds of the wall clock, read once when this package is initialized;
// after that only the monotonic clock is read, so wall-clock steps do not
// move it. Chores whose periods divide ten seconds (500 ms, 1 s, 2 s, 5 s)
// share instants, within a process and across the processes of a
// cluster whose clocks agree: every node's read-lease renewal then reaches
// the raft leader at about the same moment, which wakes it once for all
// of them instead of once for each. Nothing here changes how often a
// chore runs: a wait is never longer than its period.
package beat

import (
	"sync"
	"time"
)

// origin is the grid's zero: the last whole ten seconds of the wall
// clock before initialization, carried on the monotonic clock (Add keeps
// the monotonic reading, and time.Since reads it).
var origin = alignedOrigin(time.Now())

// alignPeriod is the wall-clock period the origin is a multiple of: one
// that the chores' periods divide.
const alignPeriod = 10 * time.Second

func alignedOrigin(now time.Time) time.Time {
	return now.Add(-time.Duration(now.UnixNano() % int64(alignPeriod)))
}

// Until is how long from now until the next multiple of period since the
// grid's origin: more than 0 and at most period. A loop that would sleep
// period after each turn sleeps Until(period) instead and wakes with every
// other loop on the same grid. A period ≤ 0 gives 0.
func Until(period time.Duration) time.Duration {
	if period <= 0 {
		return 0
	}
	return period - time.Since(origin)%period
}

// Ticker is a time.Ticker whose ticks fall on the grid: at the multiples
// of its period since the origin (the first tick is at most a period
// away). Like time.Ticker's, its channel holds one tick: a slow reader
// misses ticks, it does not queue them. Stop it when done.
type Ticker struct {
	// C delivers the ticks.
	C <-chan time.Time

	c      chan time.Time
	period time.Duration

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

// NewTicker returns a Ticker on the grid of period, which must be
// positive (it panics otherwise, as time.NewTicker does).
func NewTicker(period time.Duration) *Ticker {
	if period <= 0 {
		panic("beat: non-positive period for NewTicker")
	}
	c := make(chan time.Time, 1)
	tk := &Ticker{C: c, c: c, period: period}
	tk.mu.Lock()
	tk.t = time.AfterFunc(Until(period), tk.fire)
	tk.mu.Unlock()
	return tk
}

// fire runs on the timer's goroutine: it delivers a tick if the channel
// has room and sets the timer for the next grid instant.
func (tk *Ticker) fire() {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.stopped {
		return
	}
	select {
	case tk.c <- time.Now():
	default:
	}
	tk.t.Reset(Until(tk.period))
}

// Stop turns the ticker off: no tick is sent after Stop returns. It does
// not close C. Safe to call twice.
func (tk *Ticker) Stop() {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	tk.stopped = true
	tk.t.Stop()
}
