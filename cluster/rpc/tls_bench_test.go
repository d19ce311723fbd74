package rpc

// Mutual TLS against plaintext, in the same run:
//
//	go test -run '^$' -bench 'MutualTLS' -benchtime 2s -count 3 ./cluster/rpc
//
// Both pairs are up side by side for the whole benchmark, and the two are
// interleaved (each round trip alternates; the throughput phases
// alternate), so that both see the same machine.

import (
	"context"
	"sync"
	"testing"
	"time"
)

// startTLSPair is startRPCPair with mutual TLS (Secure, the certificates
// of one CA) and a connection open before timing starts.
func startTLSPair(b *testing.B) *Node {
	b.Helper()
	p := newPKI(b, "server", "client")
	var reg registry
	members := []string{"server", "client"}
	srv := reg.startSecure(b, "server", p.network(b, "server"), members, nil, nil)
	return echoPair(b, srv, reg.startSecure(b, "client", p.network(b, "client"), members, nil, nil))
}

// BenchmarkMutualTLS: round-trip reports one caller's latency of a
// 64-byte echo alternating between a plaintext and a mutual-TLS pair in
// each iteration (plain-p50-µs, tls-p50-µs and tls/plain, the issue's
// target ≤ 1.3); callers=64 reports calls/s of 64 callers on one
// connection, in eight alternating phases of each (tls/plain, target ≥ 0.8).
func BenchmarkMutualTLS(b *testing.B) {
	b.Run("round-trip", func(b *testing.B) {
		plain, secured := startRPCPair(b, nil, nil), startTLSPair(b)
		body, ctx := make([]byte, benchPayload), context.Background()
		pl, tl := make([]time.Duration, b.N), make([]time.Duration, b.N)
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			if _, err := plain.Call(ctx, "server", "echo", body); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := secured.Call(ctx, "server", "echo", body); err != nil {
				b.Fatal(err)
			}
			pl[i], tl[i] = t1.Sub(t0), time.Since(t1)
		}
		b.StopTimer()
		p50, p99 := benchLatencies(b, "plain", pl)
		t50, t99 := benchLatencies(b, "tls", tl)
		b.ReportMetric(ratio(t50, p50), "tls/plain-p50")
		b.ReportMetric(ratio(t99, p99), "tls/plain-p99")
	})
	b.Run("callers=64", func(b *testing.B) {
		const callers, phases = 64, 8
		plain, secured := startRPCPair(b, nil, nil), startTLSPair(b)
		body, ctx := make([]byte, benchPayload), context.Background()
		run := func(calls int, client *Node) time.Duration {
			var wg sync.WaitGroup
			start := make(chan struct{})
			for g := range callers {
				n := calls / callers
				if g < calls%callers {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for range n {
						if _, err := client.Call(ctx, "server", "echo", body); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			t0 := time.Now()
			close(start)
			wg.Wait()
			return time.Since(t0)
		}
		var plainTime, tlsTime time.Duration
		b.ResetTimer()
		for ph := range phases {
			calls := b.N / phases
			if ph < b.N%phases {
				calls++
			}
			plainTime += run(calls, plain)
			tlsTime += run(calls, secured)
		}
		b.StopTimer()
		pr, tr := float64(b.N)/plainTime.Seconds(), float64(b.N)/tlsTime.Seconds()
		b.ReportMetric(pr, "plain-calls/s")
		b.ReportMetric(tr, "tls-calls/s")
		b.ReportMetric(tr/pr, "tls/plain")
		b.ReportMetric(0, "ns/op")
	})
}
