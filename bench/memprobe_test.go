package bench

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestMemRingIsOneCycle(t *testing.T) {
	for _, n := range []int{2, 3, 1000, 4099} {
		r := newMemRing(n, rand.New(rand.NewPCG(uint64(n), 7)))
		seen := make([]bool, n)
		at := uint32(0)
		for i := range n {
			if seen[at] {
				t.Fatalf("n=%d: slot %d visited twice, after %d steps", n, at, i)
			}
			seen[at] = true
			at = r.walk(at, 1)
		}
		if at != 0 {
			t.Fatalf("n=%d: after %d steps the walk is at %d, not back at 0", n, n, at)
		}
	}
}

func TestMemProbeSamplesAndStopsTwice(t *testing.T) {
	r := newMemRing(1<<16, rand.New(rand.NewPCG(1, 2)))
	p := startMemProbe(r, time.Millisecond, 1000)
	med, hi := p.Stop()
	if _, ok := threadCPU(); !ok {
		if med != 0 || hi != 0 {
			t.Fatalf("no thread clock, yet figures %v %v", med, hi)
		}
		return
	}
	// The first sample is taken before the probe looks at Stop, so there
	// is always one.
	if med <= 0 || hi < med {
		t.Fatalf("median %v ns, max %v ns: want 0 < median <= max", med, hi)
	}
	if m2, h2 := p.Stop(); m2 != med || h2 != hi {
		t.Fatalf("second Stop: %v %v, first %v %v", m2, h2, med, hi)
	}
}

func TestMemProbeStopBeforeItRanLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newMemRing(64, rand.New(rand.NewPCG(3, 4)))
	for range 20 {
		startMemProbe(r, time.Hour, 10).Stop()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSpreadShowsMemoryAndCPUPerRepeat(t *testing.T) {
	st := func(cpu, mem float64) StageResult {
		return StageResult{Clients: 4, Total: OpResult{OpsPerSec: 100}, CPU: CPUFigs{NodesMsPerOp: cpu, MemNs: mem, StealShare: 0.01}}
	}
	res := &CouplingResults{Runs: [][]ArmResult{
		{{Arm: Arm{Mode: "local", Nodes: 3}, Repeat: 1, Stages: []StageResult{st(0.512, 171)}}},
		{{Arm: Arm{Mode: "local", Nodes: 3}, Repeat: 2, Stages: []StageResult{st(0.498, 0)}}},
	}}
	var b strings.Builder
	writeSpread(&b, res)
	for _, want := range []string{"memory ns per repeat", "| 0.512 / 0.498 | 171 / - | 1.0% |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("spread table lacks %q:\n%s", want, b.String())
		}
	}
}
