package beat

import (
	"testing"
	"time"
)

func TestUntilReachesTheGrid(t *testing.T) {
	for _, p := range []time.Duration{time.Nanosecond, 3 * time.Millisecond, 500 * time.Millisecond, time.Hour} {
		u := Until(p)
		if u <= 0 || u > p {
			t.Fatalf("Until(%v) = %v, want in (0, %v]", p, u, p)
		}
	}
	if u := Until(0); u != 0 {
		t.Fatalf("Until(0) = %v, want 0", u)
	}
	// The next grid instant is a multiple of the period since the origin:
	// with a period of an hour, now+Until is within the time between the
	// two clock readings of one (a second is far more than that takes).
	p := time.Hour
	u := Until(p)
	off := (time.Since(origin) + u) % p
	if off > time.Second && p-off > time.Second {
		t.Fatalf("now+Until(%v) is %v off the grid", p, min(off, p-off))
	}
}

func TestTickersTick(t *testing.T) {
	const p = 20 * time.Millisecond
	a, b := NewTicker(p), NewTicker(p)
	defer a.Stop()
	defer b.Stop()
	deadline := time.After(10 * time.Second)
	for i := 0; i < 3; i++ {
		for _, tk := range []*Ticker{a, b} {
			select {
			case <-tk.C:
			case <-deadline:
				t.Fatalf("tick %d did not come", i)
			}
		}
	}
}

func TestTickerStop(t *testing.T) {
	tk := NewTicker(time.Millisecond)
	select {
	case <-tk.C:
	case <-time.After(10 * time.Second):
		t.Fatal("no tick")
	}
	tk.Stop()
	tk.Stop()
	select {
	case <-tk.C: // one tick may have been waiting before Stop
	default:
	}
	time.Sleep(20 * time.Millisecond) // a stopped ticker must stay quiet; nothing to poll for
	select {
	case <-tk.C:
		t.Fatal("a tick after Stop")
	default:
	}
}

func TestNewTickerRefusesNonPositive(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewTicker(0) did not panic")
		}
	}()
	NewTicker(0)
}

// The origin is on a whole ten seconds of the wall clock, so processes
// started at different moments share the grid: a wall-clock time plus
// Until(500 ms) lands on a multiple of 500 ms of the wall clock.
func TestGridIsOnTheWallClock(t *testing.T) {
	o := alignedOrigin(time.Unix(1234, 567_000_000))
	if !o.Equal(time.Unix(1230, 0)) {
		t.Fatalf("alignedOrigin(1234.567 s) = %v, want 1230 s", o.Unix())
	}
	if origin.UnixNano()%int64(alignPeriod) != 0 {
		t.Fatalf("origin %v is not on a whole %v", origin, alignPeriod)
	}
	const p = 500 * time.Millisecond
	now := time.Now()
	u := Until(p)
	off := time.Duration(now.Add(u).UnixNano()) % p
	// The two readings of the clock (now, Until's) are microseconds apart;
	// a loaded machine may put milliseconds between them.
	if off > 100*time.Millisecond && p-off > 100*time.Millisecond {
		t.Fatalf("now+Until(%v) is %v off the wall clock's grid", p, min(off, p-off))
	}
}
