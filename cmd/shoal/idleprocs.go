package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/beat"
)

// An idle node runs its Go code on one processor (GOMAXPROCS 1) and goes
// back to the runtime's default (every core the process may use) within
// a second of being busy.
//
// Why: an idle node's cost is its wake-ups, and with a second processor
// idle the Go scheduler answers each goroutine that becomes runnable by
// waking another thread to spin looking for work, which finds none and
// sleeps again; the runtime's monitor thread also polls longer while a
// spinning thread holds a processor. On one processor neither happens:
// an idle 3-node cluster woke 22-24 % less often and spent 10-15 % less
// CPU (BENCHMARKS.md, "An idle node on one processor"). Under load one
// processor would cap the node at one core, so the governor raises it
// again as soon as the node works.
//
// The switch is process-wide (runtime.GOMAXPROCS stops the world for a
// moment, which is cheap when rare), so it belongs to the process, not to
// a node's packages: 'shoal node' runs it, and only when the operator
// has not set GOMAXPROCS.
const (
	// idleProcsPeriod is how often the governor looks at the CPU the
	// process used (on the process's beat: it adds no wake-up of its own).
	idleProcsPeriod = time.Second
	// idleProcsBelow is the share of one core under which a period counts
	// as idle; idleProcsAfter idle periods in a row lower GOMAXPROCS to 1.
	// An idle node spends 1-4 % of a core (the raft leader on a loaded
	// machine the most).
	idleProcsBelow = 0.05
	idleProcsAfter = 10
	// idleProcsAbove is the share of one core over a period above which a
	// node on one processor goes back to the default.
	idleProcsAbove = 0.25
)

// procsGovernor decides, from the CPU share of each period, when to
// lower GOMAXPROCS to 1 and when to restore the default. It is a plain
// function of what it is told; set and restore act on the runtime.
type procsGovernor struct {
	set     func(n int) // runtime.GOMAXPROCS
	restore func()      // runtime.SetDefaultGOMAXPROCS
	low     bool        // GOMAXPROCS is 1
	quiet   int         // idle periods in a row
}

// step takes the share of one core the process used over the last
// period and lowers or restores GOMAXPROCS; it returns "lowered",
// "restored" or "".
func (g *procsGovernor) step(share float64) string {
	if g.low {
		if share > idleProcsAbove {
			g.low, g.quiet = false, 0
			g.restore()
			return "restored"
		}
		return ""
	}
	if share >= idleProcsBelow {
		g.quiet = 0
		return ""
	}
	if g.quiet++; g.quiet < idleProcsAfter {
		return ""
	}
	g.low = true
	g.set(1)
	return "lowered"
}

// startIdleProcs runs the governor until ctx ends, unless GOMAXPROCS is
// set in the environment, the process has one processor anyway, or its
// CPU time cannot be read. The returned function stops it, restores the
// default if it had lowered it, and waits for it; safe to call twice.
func startIdleProcs(ctx context.Context, log *slog.Logger) (stop func()) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set || runtime.GOMAXPROCS(0) < 2 {
		return func() {}
	}
	if _, err := processCPU(); err != nil {
		log.Debug("idle processors: the process's CPU time is unreadable; GOMAXPROCS stays", "err", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g := &procsGovernor{set: func(n int) { runtime.GOMAXPROCS(n) }, restore: runtime.SetDefaultGOMAXPROCS}
		defer func() {
			if g.low {
				g.restore()
			}
		}()
		t := beat.NewTicker(idleProcsPeriod)
		defer t.Stop()
		last, _ := processCPU()
		lastAt := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cpu, err := processCPU()
			now := time.Now()
			if err != nil || now.Sub(lastAt) <= 0 {
				continue
			}
			share := float64(cpu-last) / float64(now.Sub(lastAt))
			last, lastAt = cpu, now
			if what := g.step(share); what != "" {
				log.Debug("idle processors: GOMAXPROCS "+what, "gomaxprocs", runtime.GOMAXPROCS(0), "cpu_share", share)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }
}
