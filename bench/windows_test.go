package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

// secondBuckets is one-second buckets at the given ops/s.
func secondBuckets(rates ...float64) []TimelineBucket {
	tl := make([]TimelineBucket, len(rates))
	for i, r := range rates {
		tl[i] = TimelineBucket{At: float64(i), Seconds: 1, Ops: int64(r), OpsPerSec: r}
	}
	return tl
}

func TestSwitchWindowsCountFromTheSwitchsAnswerPlusSettle(t *testing.T) {
	// Three 4 s windows: local, near, local. The switch into near was
	// asked at 4 s and answered at 5.5 s; into local at 8 s, answered
	// at 8.2 s. Settle 1 s: near counts from 6.5 s (buckets 7 only: 6
	// starts before 6.5), local from 9.2 (buckets 10, 11).
	sr := SwitchRun{
		Stage: StageResult{Timeline: secondBuckets(100, 100, 100, 100, 999, 999, 999, 80, 999, 999, 120, 120)},
		Switches: []SwitchEvent{
			{From: "local", To: "near", At: 4, Seconds: 1.5, Status: 200},
			{From: "near", To: "local", At: 8, Seconds: 0.2, Status: 200},
		},
	}
	ws := SwitchWindows(sr, []string{"local", "near", "local"}, 4*time.Second, time.Second)
	want := []struct {
		mode      string
		from, to  float64
		opsPerSec float64
		seconds   float64
	}{
		{"local", 1, 4, 100, 3},
		{"near", 6.5, 8, 80, 1},
		{"local", 9.2, 12, 120, 2},
	}
	if len(ws) != len(want) {
		t.Fatalf("%d windows, want %d: %+v", len(ws), len(want), ws)
	}
	for i, w := range want {
		g := ws[i]
		if g.Mode != w.mode || math.Abs(g.From-w.from) > 1e-9 || g.To != w.to || g.OpsPerSec != w.opsPerSec || g.Seconds != w.seconds || !g.Switched {
			t.Errorf("window %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestPairedRatiosUseNeighbouringWindows(t *testing.T) {
	ws := []SwitchWindow{
		{Mode: "local", OpsPerSec: 200, Seconds: 1, Switched: true},
		{Mode: "near", OpsPerSec: 190, Seconds: 1, Switched: true},
		{Mode: "distributed", OpsPerSec: 100, Seconds: 1, Switched: true},
		{Mode: "local", OpsPerSec: 180, Seconds: 1, Switched: true},
		{Mode: "near", OpsPerSec: 90, Seconds: 1, Switched: false}, // its switch failed: left out
		{Mode: "distributed", OpsPerSec: 50, Seconds: 1, Switched: true},
		{Mode: "local", OpsPerSec: 100, Seconds: 1, Switched: true},
		{Mode: "near", OpsPerSec: 95, Seconds: 1, Switched: true},
	}
	got := map[string][]float64{}
	for _, p := range PairedRatios(ws) {
		got[p.A+"/"+p.B] = p.Ratios
	}
	want := map[string][]float64{
		// near 190 against local 200 and 180; near 95 against local 100 only.
		"near/local": {1.0, 0.95},
		// near 190 against distributed 100 only (the window before is
		// local); near 95 against distributed 50 only.
		"near/distributed": {1.9, 1.9},
		// distributed 100 against local 200 and 180; 50 against 180 and 100.
		"distributed/local": {100.0 / 190, 50.0 / 140},
	}
	for k, w := range want {
		g := got[k]
		if len(g) != len(w) {
			t.Errorf("%s: %v, want %v", k, g, w)
			continue
		}
		for i := range w {
			if math.Abs(g[i]-w[i]) > 1e-9 {
				t.Errorf("%s: %v, want %v", k, g, w)
				break
			}
		}
	}
	p := PairedRatio{Ratios: []float64{1.0, 0.8, 0.95, 0.7}}
	if p.Median() != 0.875 || p.AtLeast(0.9) != 2 {
		t.Errorf("median %v, at least 0.9: %d; want 0.875, 2", p.Median(), p.AtLeast(0.9))
	}
}

// A switch that runs past its window's last whole bucket leaves the
// window empty: the report says so instead of printing 0 ops/s, and
// says why no ratio follows.
func TestReportNamesAWindowTheSwitchRanThrough(t *testing.T) {
	sr := SwitchRun{
		Stage: StageResult{Timeline: secondBuckets(100, 100, 100, 100)},
		Switches: []SwitchEvent{
			{From: "local", To: "near", At: 2, Seconds: 1.97, Status: 200},
		},
	}
	ws := SwitchWindows(sr, []string{"local", "near"}, 2*time.Second, 0)
	if ws[1].Seconds != 0 || ws[1].Ops != 0 || !ws[1].Switched {
		t.Fatalf("near window %+v: want switched, nothing counted", ws[1])
	}
	var b strings.Builder
	writeWindows(&b, ws)
	for _, want := range []string{"| 2 | near | 4.0 | 4.0 | none: no whole bucket after the switch answered | 0 |", "No paired ratio"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("windows lack %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "near/local") {
		t.Errorf("a ratio from an empty window:\n%s", b.String())
	}
}
