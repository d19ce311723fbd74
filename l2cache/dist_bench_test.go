package l2cache

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// tcpDistCluster starts 3 nodes over loopback sockets (memberlist, peer
// RPC and raft all TCP) with DISTRIBUTED caches, for benchmarks.
func tcpDistCluster(b *testing.B) []*Cache {
	b.Helper()
	return tcpCluster(b, 3, cluster.CacheModeDistributed, false)
}

// BenchmarkDistributedRemoteGet compares a DISTRIBUTED hit on a key owned
// by another node with a raw peer RPC round trip carrying the same value,
// alternating in one loop, and with Redis GET through go-redis on loopback
// when redis-server is on the PATH.
func BenchmarkDistributedRemoteGet(b *testing.B) {
	caches := tcpDistCluster(b)
	from := caches[0]
	r := region(b, from, "pr", NonstrictReadWrite)
	value := make([]byte, 200)
	ctx := context.Background()
	// A key that another node owns.
	var key, owner string
	for i := 0; ; i++ {
		key = strconv.Itoa(i)
		owner = distOf(from).keeper.Table().Owner(PartitionOf("pr", key, DefaultPartitions))
		if owner != distOf(from).self {
			break
		}
	}
	if _, err := r.Get(ctx, key, func(context.Context) ([]byte, error) { return value, nil }); err != nil {
		b.Fatal(err)
	}
	for _, c := range caches {
		if distOf(c).self == owner {
			distOf(c).rpc.Handle("bench.echo", func(context.Context, string, []byte) ([]byte, error) { return value, nil })
			distOf(c).rpc.HandleInline("bench.echo-inline", func(context.Context, string, []byte) ([]byte, error) { return value, nil })
		}
	}
	req := make([]byte, 40) // about the size of an encoded get request
	// Each iteration runs every contender once, in an order that rotates,
	// so that none always pays for following another (a wake-up of the
	// other core, a GC assist).
	type contender struct {
		name string
		run  func() error
		lat  testkit.Latencies
	}
	cs := []*contender{
		{name: "raw-rpc", run: func() error {
			_, err := distOf(from).rpc.Call(ctx, owner, "bench.echo", req)
			return err
		}},
		// The same echo served as the owner serves a get: inline, on the
		// connection's reader goroutine (rpc.HandleInline).
		{name: "raw-rpc-inline", run: func() error {
			_, err := distOf(from).rpc.Call(ctx, owner, "bench.echo-inline", req)
			return err
		}},
		// The same call bounded by a deadline, as the cache bounds its
		// own: the deadline travels in the frame and the handler gets a
		// context with a timer.
		{name: "raw-rpc-deadline", run: func() error {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := distOf(from).rpc.Call(dctx, owner, "bench.echo", req)
			return err
		}},
		{name: "l2-get", run: func() error {
			_, err := r.Get(ctx, key, func(context.Context) ([]byte, error) {
				return nil, errors.New("a remote hit was expected")
			})
			return err
		}},
	}
	if rdb := startRedis(b); rdb != nil {
		if err := rdb.Set(ctx, key, value, 0).Err(); err != nil {
			b.Fatal(err)
		}
		cs = append(cs, &contender{name: "redis-get", run: func() error {
			return rdb.Get(ctx, key).Err()
		}})
	}
	for _, c := range cs {
		c.lat = make(testkit.Latencies, 0, b.N)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range cs {
			c := cs[(i+j)%len(cs)]
			t0 := time.Now()
			if err := c.run(); err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			c.lat = append(c.lat, time.Since(t0))
		}
	}
	b.StopTimer()
	var l2 testkit.Latencies
	for _, c := range cs {
		if c.name == "l2-get" {
			l2 = c.lat
		}
	}
	for _, c := range cs {
		c.lat.Report(b, c.name)
		if c.name != "l2-get" {
			b.ReportMetric(float64(l2.Quantile(0.5))/float64(c.lat.Quantile(0.5)), "p50-ratio-vs-"+strings.TrimSuffix(c.name, "-get"))
			b.ReportMetric(float64(l2.Quantile(0.99))/float64(c.lat.Quantile(0.99)), "p99-ratio-vs-"+strings.TrimSuffix(c.name, "-get"))
		}
	}
}

// startRedis runs redis-server on a free loopback port for the benchmark,
// or returns nil when it is not installed.
func startRedis(b *testing.B) *redis.Client {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		b.Log("redis-server not on PATH: no Redis comparison")
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))})
	b.Cleanup(func() { rdb.Close() })
	testkit.Eventually(b, 10*time.Second, "redis to answer", func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	})
	return rdb
}
