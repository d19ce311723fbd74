package bench

import (
	"math"
	"slices"
	"time"
)

// A switch stage whose modes alternate (local, near, distributed, local,
// near, …) is a paired comparison: the same node processes, the same
// data and the same machine serve every mode, minutes apart at most, so
// the drift that separates two arms of a coupling run (this machine's
// throughput moves 10–30 % between runs a minute apart) cancels out.
// SwitchWindows reads each mode's steady throughput from the timeline,
// and PairedRatios compares each window with its neighbours.

// SwitchWindow is one mode's window of a switch stage: from the moment
// its switch answered plus the settling time to the window's end (the
// next switch's scheduled start), the timeline buckets wholly inside.
type SwitchWindow struct {
	Mode string `json:"mode"`
	// From and To bound the buckets counted, seconds from the stage's
	// start; Seconds is their total length (0: none fit).
	From      float64 `json:"from_s"`
	To        float64 `json:"to_s"`
	Seconds   float64 `json:"seconds"`
	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Errors    int64   `json:"errors"`
	// Switched is false when the switch into this window failed: its
	// figures are not the mode's, and it is left out of PairedRatios.
	Switched bool `json:"switched"`
}

// SwitchWindows splits a switch stage's timeline into its modes'
// windows (the i-th from i×every, the stage's schedule), each counted
// from settle after its switch answered.
func SwitchWindows(sr SwitchRun, modes []string, every, settle time.Duration) []SwitchWindow {
	ws := make([]SwitchWindow, 0, len(modes))
	for i, m := range modes {
		w := SwitchWindow{Mode: m, Switched: true}
		start := float64(i) * every.Seconds()
		if i > 0 {
			if i-1 >= len(sr.Switches) {
				w.Switched = false
			} else {
				ev := sr.Switches[i-1]
				w.Switched = ev.OK()
				start = max(start, ev.At+ev.Seconds)
			}
		}
		w.From, w.To = start+settle.Seconds(), float64(i+1)*every.Seconds()
		const eps = 1e-6
		for _, b := range sr.Stage.Timeline {
			if b.At+eps >= w.From && b.At+b.Seconds <= w.To+eps {
				w.Ops += b.Ops
				w.Errors += b.Errors
				w.Seconds += b.Seconds
			}
		}
		if w.Seconds > 0 {
			w.OpsPerSec = float64(w.Ops) / w.Seconds
		}
		ws = append(ws, w)
	}
	return ws
}

// PairedRatio is mode A's throughput against mode B's, window by window:
// each window of A against the mean of the nearest window of B before it
// and the nearest after it (or the one that exists).
type PairedRatio struct {
	A, B   string
	Ratios []float64 // in window order
}

// Median of the ratios (NaN when there are none).
func (p PairedRatio) Median() float64 {
	if len(p.Ratios) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(p.Ratios))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// AtLeast counts the ratios at or above t.
func (p PairedRatio) AtLeast(t float64) int {
	n := 0
	for _, r := range p.Ratios {
		if r >= t {
			n++
		}
	}
	return n
}

// PairedRatios compares every pair of modes the windows hold, in the
// order near, distributed, local (near/distributed, near/local,
// distributed/local). A window that failed to switch, or that counted no
// bucket, is left out on both sides.
func PairedRatios(ws []SwitchWindow) []PairedRatio {
	ok := func(w SwitchWindow) bool { return w.Switched && w.Seconds > 0 }
	order := []string{"near", "distributed", "local"}
	var out []PairedRatio
	for i, a := range order {
		for _, b := range order[i+1:] {
			p := PairedRatio{A: a, B: b}
			for j, w := range ws {
				if w.Mode != a || !ok(w) {
					continue
				}
				var sum float64
				var n int
				for k := j - 1; k >= 0; k-- {
					if ws[k].Mode == b && ok(ws[k]) {
						sum += ws[k].OpsPerSec
						n++
						break
					}
				}
				for k := j + 1; k < len(ws); k++ {
					if ws[k].Mode == b && ok(ws[k]) {
						sum += ws[k].OpsPerSec
						n++
						break
					}
				}
				if n > 0 && sum > 0 {
					p.Ratios = append(p.Ratios, w.OpsPerSec/(sum/float64(n)))
				}
			}
			if len(p.Ratios) > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}
