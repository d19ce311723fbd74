package main

import (
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// A real node lowers GOMAXPROCS to 1 once it has been idle for
// idleProcsAfter periods, and goes back to every core under work, as its
// own /metrics (the Go collector's go_sched_gomaxprocs_threads) reports.
// The deadlines are generous: an idle node on a loaded machine spends
// less than 5 % of a core all the same, and eight clients asking for
// /metrics at once keep it over 25 % unless the machine starves it.
func TestIdleProcsEndToEnd(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: the governor has nothing to lower")
	}
	rc := startRESTCluster(t, 1, 250)
	procs := func() float64 { return rc.metric(1, "go_sched_gomaxprocs_threads") }
	if p := procs(); p < 2 {
		t.Fatalf("a node just started runs on %v processors, want the default (%d)", p, runtime.NumCPU())
	}
	waitProcs := func(what string, want func(float64) bool, d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			p := procs()
			if want(p) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS still %v after %v", what, p, d)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	start := time.Now()
	waitProcs("idle", func(p float64) bool { return p == 1 }, 90*time.Second)
	t.Logf("lowered to 1 processor %v after the node was ready", time.Since(start).Round(100*time.Millisecond))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code, _, err := rc.send(1, restReq{method: http.MethodGet, path: "/metrics"}); err != nil || code != http.StatusOK {
					return
				}
			}
		}()
	}
	start = time.Now()
	waitProcs("busy", func(p float64) bool { return p >= 2 }, 60*time.Second)
	close(stop)
	wg.Wait()
	t.Logf("back on every core %v after the work began", time.Since(start).Round(100*time.Millisecond))
}
