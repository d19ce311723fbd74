package cluster

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// scaleRig is n nodes on the loopback preset as 'shoal up' runs it (not
// the tests' tightened timings), on an in-memory network.
type scaleRig struct {
	nodes    []*Node
	failures atomic.Int64 // EventFail seen by any node
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startScaleRig(t *testing.T, net *memnet.Network, n int, tweak func(*Config)) *scaleRig {
	t.Helper()
	r := &scaleRig{stop: make(chan struct{})}
	for i := 1; i <= n; i++ {
		ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
		host := net.Host(ip)
		tr, err := host.Transport(7946)
		if err != nil {
			t.Fatal(err)
		}
		cfg := *DefaultLoopbackConfig()
		cfg.Name = fmt.Sprintf("n%d", i)
		cfg.Transport, cfg.Network, cfg.RPCAddr = tr, host, ip+":7947"
		cfg.Logger = testLogger(t)
		if tweak != nil {
			tweak(&cfg)
		}
		nd, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r.nodes = append(r.nodes, nd)
		sub := nd.Subscribe()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case e, ok := <-sub.C():
					if !ok {
						return
					}
					if e.Type == EventFail {
						r.failures.Add(1)
					}
				case <-r.stop:
					sub.Close()
					return
				}
			}
		}()
	}
	t.Cleanup(r.close)
	return r
}

func (r *scaleRig) close() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	r.wg.Wait()
	var wg sync.WaitGroup
	for _, nd := range r.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nd.Close() }()
	}
	wg.Wait()
}

// converge joins every node through n1 and returns how long after the last
// join the slowest node saw all n alive.
func (r *scaleRig) converge(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	seed := []string{r.nodes[0].GossipAddr()}
	for _, nd := range r.nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := nd.Join(ctx, seed)
		cancel()
		if err != nil {
			t.Fatalf("%s join: %v", nd.Name(), err)
		}
	}
	start := time.Now()
	n := len(r.nodes)
	deadline := start.Add(limit)
	seen := make([]time.Duration, n)
	for {
		all := true
		for i, nd := range r.nodes {
			if seen[i] != 0 {
				continue
			}
			if countAlive(nd) != n {
				all = false
			} else {
				seen[i] = time.Since(start)
			}
		}
		if all {
			if testing.Verbose() {
				t.Logf("each node saw all alive after: %v", seen)
			}
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			lo := n
			for _, nd := range r.nodes {
				lo = min(lo, countAlive(nd))
			}
			t.Fatalf("%d nodes: after %v the slowest node sees %d alive", n, limit, lo)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countAlive(nd *Node) int {
	c := 0
	for _, m := range nd.Members() {
		if m.State == StateAlive {
			c++
		}
	}
	return c
}

// scaleSizes: SHOAL_SCALE=N runs N nodes; SHOAL_LONG (the long profile,
// 'make test-long', which runs this test without -race) 32 and 64 in a
// build without the race detector; otherwise none. 'make test' does not
// run it: on this machine under the load the suite must bear, the 3 s
// bound at 32 nodes failed 2 runs of 5 without -race and every run with
// it (below).
//
// The loopback preset assumes a node goes unscheduled for a few hundred
// milliseconds at most; the race detector multiplies every node's CPU
// several times over, and 32 of them share one process on 2 cores beside
// the other sessions' work, so what fails under -race at load is the
// machine's CPU, not the preset. Measured (BENCHMARKS.md, "Scale"): under
// -race at load 9-36, 32 nodes with the preset as shipped failed 5 runs of
// 5 (5 to 433 members declared failed, messages lost); with the probe and
// gap timeouts (in 4 runs also the TCP and dial timeouts) 4 times longer,
// 4 runs of 6 failed at load 24-30: the process got its fair share of the
// machine, about a tenth of a core, and waited seconds for it. Without
// -race the preset as shipped passed at 32 nodes 3 runs of 5 (load
// 13-31) and at 64 2 of 3 (load 22-31); every failure was the convergence
// bound (after 3 s the slowest node saw 28 or 31 of 32, after 5 s 50 of
// 64) at load 20-32 with the machine's CPU pressure at 99 %. The data
// races of the code under test are the other cluster tests' to find, with
// -race.
func scaleSizes() []int {
	if s := os.Getenv("SHOAL_SCALE"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 1 {
			return []int{n}
		}
	}
	if os.Getenv("SHOAL_LONG") != "" && !raceDetector {
		return []int{32, 64}
	}
	return nil
}

// convergeLimit is how long after the last join every node of n must see
// every other alive: 3 s at 32 nodes, 5 s at 64 (issue 20), on a shared
// 2-core machine.
func convergeLimit(n int) time.Duration {
	if n <= 32 {
		return 3 * time.Second
	}
	return 5 * time.Second
}

// TestScaleConvergesAndHolds starts 32 nodes (and 64 in the long
// profile) on the loopback preset as shipped, joins them, and holds them
// idle: every node must see every other alive within convergeLimit, no
// failure may be declared without a fault, and every bus message must
// reach everyone, none reported missed. The nodes leave all at once at the
// end.
func TestScaleConvergesAndHolds(t *testing.T) {
	sizes := scaleSizes()
	if len(sizes) == 0 {
		t.Skip("set SHOAL_SCALE=N, or SHOAL_LONG=1 without -race ('make test-long'), to run the scale test")
	}
	for _, n := range sizes {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			net := newNet(t, 64)
			r := startScaleRig(t, net, n, nil)
			took := r.converge(t, convergeLimit(n))
			t.Logf("%d nodes: all saw all alive %v after the last join", n, took)

			recs := subscribeAll(r.nodes, "scale")
			const msgs = 100
			for i := range msgs {
				if err := r.nodes[i%n].Bus().Publish("scale", []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			short := ""
			testkit.Eventually(t, 10*time.Second, "every message everywhere", func() bool {
				short = ""
				for i, rec := range recs {
					got, missed := rec.counts()
					// A node does not deliver its own messages.
					if want := msgs - ownMessages(i, n, msgs); got != want {
						short += fmt.Sprintf(" %s:%d/%d(missed %d)", r.nodes[i].Name(), got, want, missed)
					}
				}
				if short != "" && testing.Verbose() {
					var dials, dialErrs, sendErrs, notify, notifyRecv uint64
					for _, nd := range r.nodes {
						st := nd.RPC().Stats()
						dials += st.Dials.Load()
						dialErrs += st.DialErrors.Load()
						notify += st.NotifySent.Load()
						notifyRecv += st.NotifyReceived.Load()
						sendErrs += nd.Bus().Stats().SendErrors.Load()
					}
					fr := net.Stats().Frames
					t.Logf("dials %d, dial errors %d, notify sent %d received %d, bus send errors %d; memnet frames %+v; short:%s", dials, dialErrs, notify, notifyRecv, sendErrs, fr, short[:min(len(short), 300)])
				}
				return short == ""
			})
			t.Logf("%d nodes: %d messages delivered everywhere within %v", n, msgs, time.Since(start))
			hold := 5 * time.Second
			if os.Getenv("SHOAL_LONG") != "" {
				hold = 15 * time.Second
			}
			cpu0, t0 := processCPU(), time.Now()
			time.Sleep(hold) // observing an idle cluster for a while is the test
			idle := float64(processCPU()-cpu0) / float64(time.Since(t0))
			t.Logf("%d nodes idle: %.1f%% of a core in all, %.2f%% per node", n, 100*idle, 100*idle/float64(n))
			missed := 0
			for _, rec := range recs {
				_, m := rec.counts()
				missed += m
			}
			t.Logf("%d nodes: %d failure events and %d missed-message reports over the run", n, r.failures.Load(), missed)
			if f := r.failures.Load(); f != 0 {
				t.Errorf("%d nodes: %d failure events without a fault", n, f)
			}
			if missed != 0 {
				t.Errorf("%d nodes: %d missed-message reports without a fault", n, missed)
			}
			start = time.Now()
			r.close()
			t.Logf("%d nodes: closing all at once took %v", n, time.Since(start))
		})
	}
}

func ownMessages(i, n, msgs int) int {
	c := 0
	for j := range msgs {
		if j%n == i {
			c++
		}
	}
	return c
}
