package cluster

// Bus fan-out benchmark: eight in-process nodes over real loopback sockets.
//
//	go test -run '^$' -bench BusFanout -benchtime 3s -count 1 ./cluster
//
// The eight nodes are started and joined once, in the parent benchmark, and
// shared by its sub-benchmarks; they are closed when it ends (goleak checks
// the package's goroutines in TestMain, benchmarks included).

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// fanoutNodes is how many nodes the fan-out benchmark runs: one publisher
// and fanoutNodes-1 receivers.
const fanoutNodes = 8

// fanoutProbe counts the deliveries of the message currently in flight.
// Every payload carries its iteration number in its first 8 bytes; a
// receiver counts a delivery only if it is of the current iteration, and
// the delivery that completes the count timestamps it and wakes the
// benchmark, so that the time measured ends at the last delivery itself,
// not when the benchmark goroutine gets to run.
type fanoutProbe struct {
	cur  atomic.Uint64 // iteration in flight
	left atomic.Int64  // deliveries of it still expected
	done chan time.Time
}

func (p *fanoutProbe) deliver(payload []byte) {
	if len(payload) < 8 || binary.BigEndian.Uint64(payload) != p.cur.Load() {
		return
	}
	if p.left.Add(-1) == 0 {
		p.done <- time.Now()
	}
}

// arm prepares for the next message and returns its payload.
func (p *fanoutProbe) arm(payload []byte, receivers int) []byte {
	it := p.cur.Load() + 1
	msg := binary.BigEndian.AppendUint64(payload[:0], it)
	msg = msg[:cap(payload)]
	p.cur.Store(it) // from now on, deliveries of earlier messages are ignored
	p.left.Store(int64(receivers))
	return msg
}

// fanoutRig is the shared setup: nodes[0] publishes, the others receive on
// a bus topic ("bench") and on a one-way RPC handler ("bench.raw").
type fanoutRig struct {
	nodes []*Node
	peers []string // nodes[0]'s peers
	bus   fanoutProbe
	raw   fanoutProbe
	timer *time.Timer
}

func startFanoutRig(b *testing.B) *fanoutRig {
	r := &fanoutRig{
		bus: fanoutProbe{done: make(chan time.Time, 1)}, raw: fanoutProbe{done: make(chan time.Time, 1)},
		timer: time.NewTimer(time.Hour),
	}
	for i := 1; i <= fanoutNodes; i++ {
		r.nodes = append(r.nodes, startNode(b, fastLoopback(b, fmt.Sprintf("n%d", i))))
	}
	for _, nd := range r.nodes[1:] {
		join(b, nd, r.nodes[0])
	}
	for _, nd := range r.nodes {
		testkit.Eventually(b, 20*time.Second, nd.Name()+" to see 8 alive", func() bool {
			return len(nd.peerNames()) == fanoutNodes-1
		})
	}
	for _, nd := range r.nodes[1:] {
		nd.Bus().Subscribe("bench", SubscriberFuncs{OnMessage: func(m Message) { r.bus.deliver(m.Payload) }})
		nd.RPC().HandleOneway("bench.raw", func(_ string, body []byte) { r.raw.deliver(body) })
	}
	r.peers = r.nodes[0].peerNames()
	slices.Sort(r.peers)
	// Open node 0's connections to every peer (the first message to a
	// peer waits for its dial) before anything is timed.
	for range 3 {
		r.fanout(b, false)
		r.fanout(b, true)
	}
	return r
}

// fanout sends one 64-byte message from node 0 to the 7 others, on the bus
// or (raw) as one-way RPC messages, waits until all have delivered it, and
// returns the time from the send to the last delivery.
func (r *fanoutRig) fanout(b *testing.B, raw bool) time.Duration {
	var payload [64]byte
	probe := &r.bus
	if raw {
		probe = &r.raw
	}
	msg := probe.arm(payload[:], fanoutNodes-1)
	t0 := time.Now()
	if raw {
		for _, p := range r.peers {
			if err := r.nodes[0].RPC().Notify(p, "bench.raw", msg); err != nil {
				b.Fatal(err)
			}
		}
	} else if err := r.nodes[0].Bus().Publish("bench", msg); err != nil {
		b.Fatal(err)
	}
	r.timer.Reset(10 * time.Second)
	select {
	case t1 := <-probe.done:
		r.timer.Stop()
		return t1.Sub(t0)
	case <-r.timer.C:
		b.Fatalf("message %d: %d of %d deliveries missing after 10s (raw=%v)",
			probe.cur.Load(), probe.left.Load(), fanoutNodes-1, raw)
	}
	return 0
}

// fanoutLatencies sorts samples in place and reports name-p50-ms and
// name-p99-ms; it returns the two quantiles.
func fanoutLatencies(b *testing.B, name string, samples []time.Duration) (p50, p99 time.Duration) {
	if len(samples) == 0 {
		return 0, 0
	}
	slices.Sort(samples)
	q := func(f float64) time.Duration { return samples[int(f*float64(len(samples)-1)+0.5)] }
	p50, p99 = q(0.50), q(0.99)
	if name != "" {
		name += "-"
	}
	b.ReportMetric(float64(p50.Nanoseconds())/1e6, name+"p50-ms")
	b.ReportMetric(float64(p99.Nanoseconds())/1e6, name+"p99-ms")
	return p50, p99
}

// BenchmarkBusFanout publishes one 64-byte message at a time from node 0
// of 8 and times until the 7 others have delivered it to a subscriber
// (bus), against the baseline raw-rpc-fanout: the same message sent by
// node 0 as a one-way RPC to each peer's "bench.raw" handler (no
// numbering, no encoding, no receiver state machine, no delivery
// goroutine). bus-vs-raw-rpc alternates the two in one loop and reports
// their ratios. The target: bus p99 ≤ 5 ms.
func BenchmarkBusFanout(b *testing.B) {
	r := startFanoutRig(b)
	run := func(raw bool) func(*testing.B) {
		return func(b *testing.B) {
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			t0 := time.Now()
			for i := range b.N {
				lat[i] = r.fanout(b, raw)
			}
			elapsed := time.Since(t0)
			b.StopTimer()
			fanoutLatencies(b, "", lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
		}
	}
	b.Run("bus", run(false))
	b.Run("raw-rpc-fanout", run(true))
	b.Run("bus-vs-raw-rpc", func(b *testing.B) {
		bus, raw := make([]time.Duration, b.N), make([]time.Duration, b.N)
		var busTotal, rawTotal time.Duration
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			bus[i] = r.fanout(b, false)
			t1 := time.Now()
			raw[i] = r.fanout(b, true)
			busTotal, rawTotal = busTotal+t1.Sub(t0), rawTotal+time.Since(t1)
		}
		b.StopTimer()
		bus50, bus99 := fanoutLatencies(b, "bus", bus)
		raw50, raw99 := fanoutLatencies(b, "raw", raw)
		b.ReportMetric(float64(b.N)/busTotal.Seconds(), "bus-msgs/s")
		b.ReportMetric(float64(b.N)/rawTotal.Seconds(), "raw-msgs/s")
		b.ReportMetric(float64(bus50)/float64(max(raw50, 1)), "p50-ratio")
		b.ReportMetric(float64(bus99)/float64(max(raw99, 1)), "p99-ratio")
	})
}
