package rpc

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/testkit"
)

const payloadSize = 64

// rawEcho is the baseline: a plain TCP server that echoes length-prefixed
// messages, one goroutine per connection.
func rawEcho(b *testing.B) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r, w := bufio.NewReader(c), bufio.NewWriter(c)
				buf := make([]byte, 4+payloadSize)
				for {
					if _, err := io.ReadFull(r, buf); err != nil {
						return
					}
					w.Write(buf)
					if r.Buffered() == 0 {
						if w.Flush() != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }
}

func rawConn(b *testing.B, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c.(*net.TCPConn).SetNoDelay(true)
	return c
}

func rawRoundTrip(c net.Conn, msg, buf []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(c, buf)
	return err
}

func benchPair(b *testing.B, stats *wire.Stats) (client *Node, stop func()) {
	var reg registry
	srv := reg.start(b, "server", &wire.TCP{})
	srv.Handle("echo", func(_ context.Context, _ string, body []byte) ([]byte, error) { return body, nil })
	client = reg.start(b, "client", &wire.TCP{Stats: stats})
	if _, err := client.Call(context.Background(), "server", "echo", nil); err != nil {
		b.Fatal(err)
	}
	return client, func() { client.Close(); srv.Close() }
}

// BenchmarkRoundTripVsRawTCP alternates a raw TCP echo and a peer RPC call
// of the same 64-byte payload, one at a time, and reports both latencies
// and their ratio.
func BenchmarkRoundTripVsRawTCP(b *testing.B) {
	addr, stopEcho := rawEcho(b)
	defer stopEcho()
	c := rawConn(b, addr)
	defer c.Close()
	client, stop := benchPair(b, nil)
	defer stop()
	msg := binary.BigEndian.AppendUint32(nil, payloadSize)
	msg = append(msg, make([]byte, payloadSize)...)
	buf := make([]byte, len(msg))
	body := make([]byte, payloadSize)
	ctx := context.Background()
	raw, rpc := make(testkit.Latencies, 0, b.N), make(testkit.Latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := rawRoundTrip(c, msg, buf); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := client.Call(ctx, "server", "echo", body); err != nil {
			b.Fatal(err)
		}
		raw, rpc = append(raw, t1.Sub(t0)), append(rpc, time.Since(t1))
	}
	b.StopTimer()
	raw.Report(b, "raw")
	rpc.Report(b, "rpc")
	b.ReportMetric(float64(rpc.Quantile(0.5))/float64(raw.Quantile(0.5)), "p50-ratio")
	b.ReportMetric(float64(rpc.Quantile(0.99))/float64(raw.Quantile(0.99)), "p99-ratio")
}

// BenchmarkThroughput runs many concurrent callers over one connection;
// raw-pipelined streams the same messages over one raw TCP connection as
// fast as the echo server returns them: the wire's limit on loopback.
func BenchmarkThroughput(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			var stats wire.Stats
			client, stop := benchPair(b, &stats)
			defer stop()
			body := make([]byte, payloadSize)
			ctx := context.Background()
			before := stats.Snapshot()
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := 0; g < callers; g++ {
				n := b.N / callers
				if g < b.N%callers {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < n; i++ {
						if _, err := client.Call(ctx, "server", "echo", body); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			after := stats.Snapshot()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			if w := after.Writes - before.Writes; w > 0 {
				b.ReportMetric(float64(after.FramesOut-before.FramesOut)/float64(w), "frames/write")
			}
		})
	}
	b.Run("raw-pipelined", func(b *testing.B) {
		addr, stopEcho := rawEcho(b)
		defer stopEcho()
		c := rawConn(b, addr)
		defer c.Close()
		msg := binary.BigEndian.AppendUint32(nil, payloadSize)
		msg = append(msg, make([]byte, payloadSize)...)
		b.ResetTimer()
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			r := bufio.NewReader(c)
			buf := make([]byte, len(msg))
			for i := 0; i < b.N; i++ {
				if _, err := io.ReadFull(r, buf); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		w := bufio.NewWriter(c)
		for i := 0; i < b.N; i++ {
			w.Write(msg)
		}
		w.Flush()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
}
