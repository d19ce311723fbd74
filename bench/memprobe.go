package bench

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"
)

// The memory-latency probe.
//
// On a shared two-core machine a node's CPU time per operation moves by
// ±25 % from one run to the next in every mode, far more than the
// difference the coupling benchmark is after, and neither the load
// average nor the other processes' share of the machine explains it: a
// CPU-bound loop that fits in the L1 cache runs at one speed all the
// while (BENCHMARKS.md). The latency of a load from memory moves with it,
// in part (a correlation of 0.37–0.74 over a run's stages, BENCHMARKS.md):
// the hosts' caches and memory are shared with other machines, and a
// node's work (maps, the collector, SQLite's pages) waits on memory more
// than on arithmetic. So the runner measures that latency through every
// stage's measured window and reports it beside the stage, to help a
// reader tell a slow mode from a slow minute.
//
// The probe follows a single random cycle through a ring of memProbeBytes
// (far larger than any cache here, so nearly every load goes to memory),
// memProbeSteps dependent loads per sample, on a thread of its own, and
// times each sample by the thread's own CPU clock: time the thread spent
// waiting for a CPU is not counted, so a busy machine does not inflate
// the figure, a slow memory does. One sample every memProbeEvery costs
// about 1–2 % of one CPU.

const (
	memProbeBytes = 64 << 20
	memProbeSteps = 20000
	memProbeEvery = 250 * time.Millisecond
)

// memRing is a ring of indices that form one cycle through all of it
// (Sattolo's algorithm), so a walk visits every slot before it repeats.
type memRing []uint32

func newMemRing(n int, rnd *rand.Rand) memRing {
	r := make(memRing, n)
	for i := range r {
		r[i] = uint32(i)
	}
	for i := n - 1; i > 0; i-- {
		j := rnd.IntN(i) // j < i: one cycle, not any permutation
		r[i], r[j] = r[j], r[i]
	}
	return r
}

// walk follows the ring steps times from at and returns where it ended.
func (r memRing) walk(at uint32, steps int) uint32 {
	for range steps {
		at = r[at]
	}
	return at
}

var (
	sharedRingOnce sync.Once
	sharedRing     memRing
)

// probeRing is the process's ring, built on first use (about half a
// second of one CPU) and kept: every stage of a run walks the same one.
func probeRing() memRing {
	sharedRingOnce.Do(func() {
		sharedRing = newMemRing(memProbeBytes/4, rand.New(rand.NewPCG(1, 2)))
	})
	return sharedRing
}

// memProbe samples the memory latency until Stop.
type memProbe struct {
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	samples  []float64 // ns per load; written by the probe goroutine until done
}

// startMemProbe starts sampling on ring every period, steps loads per
// sample. Without a thread CPU clock (threadCPU reports !ok) it samples
// nothing.
func startMemProbe(ring memRing, period time.Duration, steps int) *memProbe {
	p := &memProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go p.run(ring, period, steps)
	return p
}

func (p *memProbe) run(ring memRing, period time.Duration, steps int) {
	defer close(p.done)
	runtime.LockOSThread() // the thread clock must be this goroutine's
	defer runtime.UnlockOSThread()
	t := time.NewTicker(period)
	defer t.Stop()
	var at uint32
	for {
		a, ok := threadCPU()
		if !ok {
			return
		}
		at = ring.walk(at, steps)
		b, _ := threadCPU()
		if b > a {
			p.samples = append(p.samples, float64(b-a)/float64(steps))
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// Stop ends the sampling and returns the median and the largest sample
// (ns per load), 0 if there were none. It is safe to call more than once.
func (p *memProbe) Stop() (median, maxNs float64) {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	if len(p.samples) == 0 {
		return 0, 0
	}
	s := slices.Clone(p.samples)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}
