package bench

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/l2cache"
)

// results builds a one-repeat result set: ops/s per arm, one stage each.
func fakeResults(clients int, arms map[Arm]float64, order []Arm) *CouplingResults {
	var run []ArmResult
	for _, a := range order {
		st := StageResult{Clients: clients, Seconds: 1, Total: OpResult{Op: "total", OpsPerSec: arms[a], Count: int64(arms[a])},
			Cache: CacheFigs{Hits: 9, Misses: 1, HitRatio: 0.9}, Traffic: Traffic{SocketBytes: 100, SocketBytesPerOp: 2}}
		run = append(run, ArmResult{Arm: a, Repeat: 1, Stages: []StageResult{st}})
	}
	return &CouplingResults{Manifest: Manifest{Repeat: 1, Experiment: &Experiment{Name: "fake", Backups: new(int)}}, Runs: [][]ArmResult{run}}
}

// With three modes, Winners names the fastest and the runner-up, and
// NEAR's ratios to LOCAL and DISTRIBUTED; the NEAR table marks the ratios
// that miss their targets at 3 nodes.
func TestWinnersThreeModes(t *testing.T) {
	l3, d3, n3 := Arm{"local", 3}, Arm{"distributed", 3}, Arm{"near", 3}
	l1, d1, n1 := Arm{"local", 1}, Arm{"distributed", 1}, Arm{"near", 1}
	r := fakeResults(8, map[Arm]float64{l1: 1000, d1: 1020, n1: 990, l3: 2000, d3: 1000, n3: 1700},
		[]Arm{l1, d1, n1, l3, d3, n3})
	got := Winners(r)
	want := []string{
		"1 nodes, 8 clients: even (distributed 1.02× local); near/local 0.99×; near/distributed 0.97×",
		"3 nodes, 8 clients: local (1.18× near); near/local 0.85×; near/distributed 1.70×",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("winners:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var b bytes.Buffer
	writeNearRatios(&b, r)
	md := b.String()
	for _, s := range []string{"| 1 | 8 | 1000 | 1020 | 990 | 0.99 | 0.97 |", "| 3 | 8 | 2000 | 1000 | 1700 | 0.85 ✗ | 1.70 ✗ |", "0.900 / 0.900 / 0.900"} {
		if !strings.Contains(md, s) {
			t.Errorf("NEAR table lacks %q:\n%s", s, md)
		}
	}
	// Without NEAR: the two-mode line, and no NEAR table.
	r = fakeResults(8, map[Arm]float64{l3: 2000, d3: 1000}, []Arm{l3, d3})
	if got := Winners(r); len(got) != 1 || got[0] != "3 nodes, 8 clients: local (2.00× distributed)" {
		t.Errorf("winners without near: %q", got)
	}
	b.Reset()
	writeNearRatios(&b, r)
	if b.Len() != 0 {
		t.Errorf("a NEAR table without a NEAR arm:\n%s", b.String())
	}
}

// The report's header says in what order the repeats ran the arms: the
// alternating order a run records, and the fixed one of results written
// before it.
func TestMarkdownArmOrder(t *testing.T) {
	one := 1
	e := &Experiment{Modes: []string{"local", "near"}, Sizes: []int{3}, Backups: &one}
	st := StageResult{Clients: 4, Seconds: 1, Total: OpResult{Count: 10, OpsPerSec: 10},
		Cache: CacheFigs{Hits: 9, Misses: 1, HitRatio: 0.9}}
	var run []ArmResult
	for _, a := range e.Arms() {
		run = append(run, ArmResult{Arm: a, Repeat: 1, Stages: []StageResult{st}})
	}
	for _, tc := range []struct{ order, want string }{
		{armOrderAlternate, "| arm order | " + armOrderAlternate + " |"},
		{"", "| arm order | the experiment's, in every repeat |"},
	} {
		r := &CouplingResults{Manifest: Manifest{Experiment: e, Repeat: 1, ArmOrder: tc.order}, Runs: [][]ArmResult{run}}
		var b strings.Builder
		WriteMarkdown(&b, r, nil)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("ArmOrder %q: the report has no line %q", tc.order, tc.want)
		}
	}
}

// The owners' and writers' histograms: a stage's growth over the nodes,
// merged over repeats, and quantiles interpolated within log2 buckets.
func TestWaitFigures(t *testing.T) {
	bucket := l2cache.LagBucket(700 * time.Microsecond) // 512–1024 µs
	snap := func(n, usec uint64) map[string]l2cache.DurationsSnapshot {
		b := make([]uint64, l2cache.LagBuckets)
		b[bucket] = n
		return map[string]l2cache.DurationsSnapshot{"holders": {Buckets: b, Usec: usec}}
	}
	var sum map[string]WaitFigs
	addWaits(&sum, snap(150, 150*700), snap(50, 50*700)) // this node's stage: 100 more
	addWaits(&sum, snap(7, 7*700), snap(7, 7*700))       // a node with no growth adds nothing
	w := sum["holders"]
	if w.Count != 100 || w.MeanMs != 0.7 {
		t.Fatalf("%+v: want 100 waits of 0.7 ms mean", w)
	}
	// Half-way through the bucket's 512 µs, 99 % of the way.
	if want := (512 + 512*0.5) / 1e3; math.Abs(w.P50Ms-want) > 1e-9 {
		t.Errorf("p50 %v ms, want %v", w.P50Ms, want)
	}
	if want := (512 + 512*0.99) / 1e3; math.Abs(w.P99Ms-want) > 1e-9 {
		t.Errorf("p99 %v ms, want %v", w.P99Ms, want)
	}
	m := mergeWaits([]StageResult{{Cache: CacheFigs{OwnerWaits: sum}}, {Cache: CacheFigs{OwnerWaits: sum}}},
		func(x StageResult) map[string]WaitFigs { return x.Cache.OwnerWaits })
	if got := m["holders"]; got.Count != 200 || got.P50Ms != w.P50Ms || got.MeanMs != w.MeanMs {
		t.Errorf("merged %+v, want 200 like %+v", got, w)
	}
}
