package rpc

// Benchmarks of the peer RPC against plain TCP on loopback, each baseline
// measured in the same run as the thing it is compared with:
//
//	go test -run '^$' -bench 'RoundTrip|Throughput' -benchtime 2s -count 1 ./cluster/rpc
//
// Latencies are sampled per iteration into preallocated slices and sorted
// once after the timer stops.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
)

const benchPayload = 64

// benchLatencies sorts samples in place and reports name-p50-µs and
// name-p99-µs (or p50-µs and p99-µs when name is empty). It returns the two
// quantiles for ratios.
func benchLatencies(b *testing.B, name string, samples []time.Duration) (p50, p99 time.Duration) {
	if len(samples) == 0 {
		return 0, 0
	}
	slices.Sort(samples)
	q := func(f float64) time.Duration { return samples[int(f*float64(len(samples)-1)+0.5)] }
	p50, p99 = q(0.50), q(0.99)
	if name != "" {
		name += "-"
	}
	b.ReportMetric(float64(p50.Nanoseconds())/1e3, name+"p50-µs")
	b.ReportMetric(float64(p99.Nanoseconds())/1e3, name+"p99-µs")
	return p50, p99
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// startRawEcho is the baseline server: plain TCP on 127.0.0.1 that reads
// 4-byte-length-prefixed messages and writes each back, one goroutine per
// connection. It flushes whenever it has no further input buffered, so it
// answers a lone message at once and batches a pipelined stream. It stops
// when the benchmark ends (after the clients' connections are closed).
func startRawEcho(b *testing.B) string {
	b.Helper()
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
				_ = c.(*net.TCPConn).SetNoDelay(true)
				r, w := bufio.NewReaderSize(c, 64<<10), bufio.NewWriterSize(c, 64<<10)
				var hdr [4]byte
				buf := make([]byte, 64<<10)
				for {
					if _, err := io.ReadFull(r, hdr[:]); err != nil {
						return
					}
					n := int(binary.BigEndian.Uint32(hdr[:]))
					if n > len(buf) {
						return
					}
					if _, err := io.ReadFull(r, buf[:n]); err != nil {
						return
					}
					w.Write(hdr[:])
					w.Write(buf[:n])
					if r.Buffered() == 0 {
						if w.Flush() != nil {
							return
						}
					}
				}
			}()
		}
	}()
	// Cleanups run last-registered first: the clients' conns (registered
	// later by dialRaw) close before this waits for the server goroutines.
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func dialRaw(b *testing.B, addr string) net.Conn {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetNoDelay(true)
	b.Cleanup(func() { c.Close() })
	return c
}

// rawMessage is a 4-byte length and a benchPayload-byte payload.
func rawMessage() []byte {
	return append(binary.BigEndian.AppendUint32(nil, benchPayload), make([]byte, benchPayload)...)
}

// rawRoundTrip writes msg and reads the echo into buf (len(msg) bytes):
// one write syscall, and reads straight from the socket.
func rawRoundTrip(c net.Conn, msg, buf []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(c, buf)
	return err
}

// startRPCPair starts a server rpc.Node with an "echo" handler returning
// its body and a client rpc.Node, both over wire.TCP on 127.0.0.1:0, and
// makes one call so that the connection is open before timing starts.
func startRPCPair(b *testing.B, clientStats, serverStats *wire.Stats) *Node {
	b.Helper()
	var reg registry
	srv := reg.start(b, "server", &wire.TCP{Stats: serverStats})
	return echoPair(b, srv, reg.start(b, "client", &wire.TCP{Stats: clientStats}))
}

// echoPair gives srv an "echo" handler returning its body and makes one
// call from client, so that the connection is open before timing starts.
func echoPair(b *testing.B, srv, client *Node) *Node {
	b.Helper()
	srv.Handle("echo", func(_ context.Context, _ string, body []byte) ([]byte, error) { return body, nil })
	resp, err := client.Call(context.Background(), "server", "echo", make([]byte, benchPayload))
	if err != nil || len(resp) != benchPayload {
		b.Fatalf("warm-up call: %d bytes, %v", len(resp), err)
	}
	return client
}

// BenchmarkRoundTrip measures one caller's round trip of a 64-byte payload,
// ping-pong on one connection: raw-tcp-echo is the plain TCP baseline, rpc
// is a peer RPC call. BenchmarkRoundTripVsRawTCP interleaves the two for a
// ratio less exposed to the machine's drift.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("raw-tcp-echo", func(b *testing.B) {
		c := dialRaw(b, startRawEcho(b))
		msg, buf := rawMessage(), make([]byte, 4+benchPayload)
		if err := rawRoundTrip(c, msg, buf); err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, b.N)
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			if err := rawRoundTrip(c, msg, buf); err != nil {
				b.Fatal(err)
			}
			lat[i] = time.Since(t0)
		}
		b.StopTimer()
		benchLatencies(b, "", lat)
	})
	b.Run("rpc", func(b *testing.B) {
		client := startRPCPair(b, nil, nil)
		body, ctx := make([]byte, benchPayload), context.Background()
		lat := make([]time.Duration, b.N)
		b.ResetTimer()
		for i := range b.N {
			t0 := time.Now()
			if _, err := client.Call(ctx, "server", "echo", body); err != nil {
				b.Fatal(err)
			}
			lat[i] = time.Since(t0)
		}
		b.StopTimer()
		benchLatencies(b, "", lat)
	})
}

// BenchmarkRoundTripVsRawTCP does, in each iteration, one raw TCP echo and
// one peer RPC call of the same 64-byte payload, timing each, and reports
// both latencies and their ratios (rpc / raw; the target is ≤ 1.5).
func BenchmarkRoundTripVsRawTCP(b *testing.B) {
	c := dialRaw(b, startRawEcho(b))
	client := startRPCPair(b, nil, nil)
	msg, buf := rawMessage(), make([]byte, 4+benchPayload)
	if err := rawRoundTrip(c, msg, buf); err != nil {
		b.Fatal(err)
	}
	body, ctx := make([]byte, benchPayload), context.Background()
	raw, rpc := make([]time.Duration, b.N), make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := rawRoundTrip(c, msg, buf); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := client.Call(ctx, "server", "echo", body); err != nil {
			b.Fatal(err)
		}
		raw[i], rpc[i] = t1.Sub(t0), time.Since(t1)
	}
	b.StopTimer()
	raw50, raw99 := benchLatencies(b, "raw", raw)
	rpc50, rpc99 := benchLatencies(b, "rpc", rpc)
	b.ReportMetric(ratio(rpc50, raw50), "p50-ratio")
	b.ReportMetric(ratio(rpc99, raw99), "p99-ratio")
}

// BenchmarkThroughput runs 1, 16 or 64 goroutines calling concurrently
// over one client-server connection (b.N calls split among them) and
// reports calls/s and the write coalescing factor: frames per write
// syscall on the client (requests) and on the server (responses).
// raw-tcp-pipelined is the baseline: one raw TCP connection, a writer
// goroutine streaming the same messages and a reader goroutine reading the
// echoes, which is what loopback carries when nothing waits for anything.
func BenchmarkThroughput(b *testing.B) {
	for _, callers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			var cstats, sstats wire.Stats
			client := startRPCPair(b, &cstats, &sstats)
			body, ctx := make([]byte, benchPayload), context.Background()
			c0, s0 := cstats.Snapshot(), sstats.Snapshot()
			var wg sync.WaitGroup
			start := make(chan struct{})
			for g := range callers {
				n := b.N / callers
				if g < b.N%callers {
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
			b.ResetTimer()
			t0, cpu0 := time.Now(), processCPU(b)
			close(start)
			wg.Wait()
			elapsed, cpu := time.Since(t0), processCPU(b)-cpu0
			b.StopTimer()
			c1, s1 := cstats.Snapshot(), sstats.Snapshot()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/call")
			if w := c1.Writes - c0.Writes; w > 0 {
				b.ReportMetric(float64(c1.FramesOut-c0.FramesOut)/float64(w), "frames/write")
			}
			if w := s1.Writes - s0.Writes; w > 0 {
				b.ReportMetric(float64(s1.FramesOut-s0.FramesOut)/float64(w), "srv-frames/write")
			}
		})
	}
	b.Run("raw-tcp-pipelined", func(b *testing.B) {
		c := dialRaw(b, startRawEcho(b))
		msg := rawMessage()
		if err := rawRoundTrip(c, msg, make([]byte, len(msg))); err != nil {
			b.Fatal(err)
		}
		errs := make(chan error, 2)
		b.ResetTimer()
		t0 := time.Now()
		go func() { // writer
			w := bufio.NewWriterSize(c, 64<<10)
			for range b.N {
				if _, err := w.Write(msg); err != nil {
					errs <- err
					return
				}
			}
			errs <- w.Flush()
		}()
		go func() { // reader
			r := bufio.NewReaderSize(c, 64<<10)
			buf := make([]byte, len(msg))
			for range b.N {
				if _, err := io.ReadFull(r, buf); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
		for range 2 {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		elapsed := time.Since(t0)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	})
}

// BenchmarkThroughputVsRawTCP measures 64 concurrent callers on one
// connection two ways, alternating in four phases each (raw, rpc, raw, rpc,
// …, b.N calls of each kind in all) so that both see the same machine:
// rpc is a peer RPC echo as in BenchmarkThroughput; raw is the plain TCP
// echo server of the round-trip baseline, called by 64 goroutines sharing
// one connection the simplest way — each writes its 68-byte message (its
// index in the payload) with one write syscall under a mutex, and a reader
// goroutine hands each echo to its caller by index. It reports both rates
// and shoal/raw, their ratio.
func BenchmarkThroughputVsRawTCP(b *testing.B) {
	const callers, phases = 64, 4
	b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
		client := startRPCPair(b, nil, nil)
		raw := startRawMux(b, callers)
		body, ctx := make([]byte, benchPayload), context.Background()
		// run splits calls among the callers, starts them together and
		// returns the elapsed time.
		run := func(calls int, call func(g int) error) (wall, cpu time.Duration) {
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
						if err := call(g); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			t0, cpu0 := time.Now(), processCPU(b)
			close(start)
			wg.Wait()
			return time.Since(t0), processCPU(b) - cpu0
		}
		var rawTime, rpcTime, rawCPU, rpcCPU time.Duration
		b.ResetTimer()
		for ph := range phases {
			calls := b.N / phases
			if ph < b.N%phases {
				calls++
			}
			wall, cpu := run(calls, raw.call)
			rawTime, rawCPU = rawTime+wall, rawCPU+cpu
			wall, cpu = run(calls, func(int) error {
				_, err := client.Call(ctx, "server", "echo", body)
				return err
			})
			rpcTime, rpcCPU = rpcTime+wall, rpcCPU+cpu
		}
		b.StopTimer()
		rpcRate, rawRate := float64(b.N)/rpcTime.Seconds(), float64(b.N)/rawTime.Seconds()
		b.ReportMetric(rpcRate, "calls/s")
		b.ReportMetric(rawRate, "raw-calls/s")
		b.ReportMetric(rpcRate/rawRate, "shoal/raw")
		b.ReportMetric(float64(rpcCPU.Nanoseconds())/float64(b.N), "cpu-ns/call")
		b.ReportMetric(float64(rawCPU.Nanoseconds())/float64(b.N), "raw-cpu-ns/call")
	})
}

// processCPU is the CPU time the process has used (user and system, every
// thread: client, server and garbage collector alike). On a machine shared
// with other work it varies far less than the wall time does, because
// time spent waiting for a core is not counted.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawMux is the raw baseline's client: callers share one TCP connection to
// the raw echo server, each writing its message with one syscall.
type rawMux struct {
	c       net.Conn
	mu      sync.Mutex // serialises writes
	msgs    [][]byte   // per caller: length prefix and payload holding its index
	waiters []chan struct{}
	dead    chan struct{} // closed when the reader stops
}

func startRawMux(b *testing.B, callers int) *rawMux {
	b.Helper()
	m := &rawMux{c: dialRaw(b, startRawEcho(b)), dead: make(chan struct{})}
	for g := range callers {
		msg := rawMessage()
		binary.BigEndian.PutUint32(msg[4:], uint32(g))
		m.msgs = append(m.msgs, msg)
		m.waiters = append(m.waiters, make(chan struct{}, 1))
	}
	go func() { // reader: ends when the connection closes at cleanup
		defer close(m.dead)
		r := bufio.NewReaderSize(m.c, 64<<10)
		buf := make([]byte, 4+benchPayload)
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				return
			}
			g := binary.BigEndian.Uint32(buf[4:])
			if int(g) >= len(m.waiters) {
				return
			}
			m.waiters[g] <- struct{}{}
		}
	}()
	// Registered after dialRaw's, so it runs first: close, then wait.
	b.Cleanup(func() { m.c.Close(); <-m.dead })
	return m
}

func (m *rawMux) call(g int) error {
	m.mu.Lock()
	_, err := m.c.Write(m.msgs[g])
	m.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-m.waiters[g]:
		return nil
	case <-m.dead:
		return errors.New("raw echo connection lost")
	}
}
