package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// BenchmarkBusFanout publishes from one of 8 nodes on loopback sockets and
// times until all 7 others have delivered the message to a subscriber.
// The baseline, measured alternately in the same loop, is the same fan-out
// with raw one-way peer RPC messages (no numbering, no receiver state).
func BenchmarkBusFanout(b *testing.B) {
	const n = 8
	var nodes []*Node
	for i := 1; i <= n; i++ {
		nodes = append(nodes, startNode(b, fastLoopback(b, fmt.Sprintf("n%d", i))))
	}
	for _, nd := range nodes[1:] {
		join(b, nd, nodes[0])
	}
	for _, nd := range nodes {
		eventually(b, 20*time.Second, "8 members", func() bool { return len(nd.peerNames()) == n-1 })
	}
	delivered := make(chan struct{}, 64)
	for _, nd := range nodes[1:] {
		nd.Bus().Subscribe("bench", SubscriberFuncs{OnMessage: func(Message) { delivered <- struct{}{} }})
		nd.RPC().HandleOneway("bench.raw", func(string, []byte) { delivered <- struct{}{} })
	}
	payload := make([]byte, 64)
	wait := func() {
		for i := 0; i < n-1; i++ {
			select {
			case <-delivered:
			case <-time.After(10 * time.Second):
				b.Fatal("a delivery never came")
			}
		}
	}
	peers := nodes[0].peerNames()
	bus, raw := make(testkit.Latencies, 0, b.N), make(testkit.Latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := nodes[0].Bus().Publish("bench", payload); err != nil {
			b.Fatal(err)
		}
		wait()
		t1 := time.Now()
		for _, p := range peers {
			if err := nodes[0].RPC().Notify(p, "bench.raw", payload); err != nil {
				b.Fatal(err)
			}
		}
		wait()
		bus, raw = append(bus, t1.Sub(t0)), append(raw, time.Since(t1))
	}
	b.StopTimer()
	bus.Report(b, "bus")
	raw.Report(b, "raw-rpc")
	b.ReportMetric(float64(bus.Quantile(0.99))/float64(raw.Quantile(0.99)), "p99-ratio")
}
