package cp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// benchCluster is a 3-node group on loopback sockets (memberlist, peer RPC
// and raft over TCP) with a leader and a follower picked out.
func benchCluster(b *testing.B) (tc *testCluster, leader, follower *member) {
	b.Helper()
	tc = &testCluster{t: b, expect: 3}
	for i := 1; i <= 3; i++ {
		tc.add(fmt.Sprintf("n%d", i), b.TempDir())
	}
	leader = tc.leader()
	for _, m := range tc.members {
		if m != leader {
			return tc, leader, m
		}
	}
	return nil, nil, nil
}

// BenchmarkCAS measures CompareAndSet issued on the leader and on a
// follower (which forwards over the peer RPC), against the baseline of
// raft.Apply of an equally sized command on the leader, in the same run.
//
// A loaded machine can depose the leader mid-run. The benchmark then goes
// on rather than failing: a raw apply refused for want of leadership is
// sent to the new leader (an undecodable command changes nothing, so a
// repeat is harmless), and a compare-and-set whose outcome is unknown is
// settled by reading its key (cas). The "retries" metric counts both;
// "leader" keeps issuing on the first leader, which forwards once it
// follows.
func BenchmarkCAS(b *testing.B) {
	tc, leader, follower := benchCluster(b)
	ctx := context.Background()
	value := make([]byte, 64)
	// The baseline applies an undecodable command: raft does all its work
	// (log, replication, commit, FSM call), the store's layer none.
	raw := append([]byte{0xc1}, value...)
	var retries atomic.Uint64
	var mu sync.Mutex
	current := leader
	rawApply := func(int, int) error {
		for {
			mu.Lock()
			l := current
			mu.Unlock()
			err := l.store.raft.Apply(raw, 5*time.Second).Error()
			if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) &&
				!errors.Is(err, raft.ErrEnqueueTimeout) && !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
				return err
			}
			retries.Add(1)
			time.Sleep(5 * time.Millisecond) // not a spin while leadership moves
			mu.Lock()
			if current == l {
				current = tc.leader()
			}
			mu.Unlock()
		}
	}
	for _, c := range []struct {
		name string
		op   func(caller, i int) error
	}{
		{"raw-raft-apply", rawApply},
		{"leader", casLoop(ctx, leader.store, "bench/leader", &retries)},
		{"follower", casLoop(ctx, follower.store, "bench/follower", &retries)},
	} {
		b.Run(c.name, func(b *testing.B) {
			before := retries.Load()
			measure(b, c.op)
			b.ReportMetric(float64(retries.Load()-before), "retries")
		})
	}
}

// casLoop returns an op that keeps one key per caller moving by
// compare-and-set; each caller owns its slot of versions. Each value is
// unique (caller and operation number), so that an unknown outcome is
// settled by reading the key: the value there means the write took, the
// version it expected means it did not and it is sent again.
func casLoop(ctx context.Context, s *Store, prefix string, retries *atomic.Uint64) func(int, int) error {
	versions := make([]uint64, callers+1)
	return func(caller, i int) error {
		key := fmt.Sprintf("%s/%d", prefix, caller)
		value := make([]byte, 64)
		binary.BigEndian.PutUint64(value, uint64(caller))
		binary.BigEndian.PutUint64(value[8:], uint64(i))
		for {
			v, err := s.CompareAndSet(ctx, key, versions[caller], value)
			if !errors.Is(err, ErrIndeterminate) {
				if err == nil {
					versions[caller] = v
				}
				return err
			}
			retries.Add(1)
			kv, err := settledRead(ctx, s, key)
			if err != nil {
				return err
			}
			if bytes.Equal(kv.Value, value) {
				versions[caller] = kv.Version
				return nil
			}
			if kv.Version != versions[caller] {
				return fmt.Errorf("%s moved to version %d under its only writer (expected %d)", key, kv.Version, versions[caller])
			}
		}
	}
}

// settledRead reads key after a marker write has committed: raft commits
// in log order, and a new leader commits earlier terms' entries with its
// own first one, so a write whose answer was lost has committed by then
// or never will (the same argument as checked in cp_test.go). A missing
// key reads as version 0.
func settledRead(ctx context.Context, s *Store, key string) (KV, error) {
	for {
		_, err := s.Put(ctx, "bench/settle", nil)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrIndeterminate) {
			return KV{}, err
		}
	}
	kv, err := s.Get(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return KV{}, nil
	}
	return kv, err
}

// BenchmarkGet measures linearizable Get on the leader and on a follower,
// and StaleGet (a local map read) as the floor.
func BenchmarkGet(b *testing.B) {
	_, leader, follower := benchCluster(b)
	ctx := context.Background()
	if _, err := leader.store.Put(ctx, "bench/k", make([]byte, 64)); err != nil {
		b.Fatal(err)
	}
	testkit.Eventually(b, 5*time.Second, "the follower to apply", func() bool {
		_, err := follower.store.StaleGet("bench/k")
		return err == nil
	})
	for _, tc := range []struct {
		name string
		op   func(int, int) error
	}{
		{"stale-local", func(int, int) error { _, err := follower.store.StaleGet("bench/k"); return err }},
		{"leader", func(int, int) error { _, err := leader.store.Get(ctx, "bench/k"); return err }},
		{"follower", func(int, int) error { _, err := follower.store.Get(ctx, "bench/k"); return err }},
	} {
		b.Run(tc.name, func(b *testing.B) { measure(b, tc.op) })
	}
}

// callers is the concurrency of the throughput phase.
const callers = 16

// measure runs op b.N times one after another for latency (as caller 0),
// then with 16 concurrent callers (1..16) for throughput.
func measure(b *testing.B, op func(caller, i int) error) {
	lat := make(testkit.Latencies, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := op(0, i); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	lat.Report(b, "lat")
	n := max(b.N, 200)
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += callers {
				if err := op(g+1, i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "ops/s-16-callers")
	b.ReportMetric(0, "ns/op") // the latency metrics above say it better
}

// BenchmarkCASMutualTLS measures CompareAndSet on two 3-node groups up
// side by side, one in plaintext and one over mutual TLS (peer RPC and
// raft), issued on the leader (raft's replication) and on a follower
// (which forwards over the peer RPC too). The two alternate: each
// iteration of the latency phase does one CAS on each, and the
// 16-caller phase alternates eight times between them. It reports both
// and tls/plain.
//
//	go test -run '^$' -bench CASMutualTLS -benchtime 2s -count 3 ./cluster/cp
func BenchmarkCASMutualTLS(b *testing.B) {
	_, plainLeader, plainFollower := benchCluster(b)
	var retries atomic.Uint64
	p := newTestPKI(b)
	tc := &testCluster{t: b, expect: 3, secure: func(name string) *tlsutil.Reloader { return p.reloader(b, name) }}
	for i := 1; i <= 3; i++ {
		tc.add(fmt.Sprintf("t%d", i), b.TempDir())
	}
	tlsLeader := tc.leader()
	var tlsFollower *member
	for _, m := range tc.members {
		if m != tlsLeader {
			tlsFollower = m
			break
		}
	}
	ctx := context.Background()
	for _, via := range []struct {
		name       string
		plain, tls *member
	}{{"leader", plainLeader, tlsLeader}, {"follower", plainFollower, tlsFollower}} {
		// Made once: the versions each caller's key is at carry over from
		// one run of the sub-benchmark to the next.
		plain := casLoop(ctx, via.plain.store, "bench/"+via.name, &retries)
		secured := casLoop(ctx, via.tls.store, "bench/"+via.name, &retries)
		b.Run(via.name, func(b *testing.B) {
			pl, tl := make(testkit.Latencies, 0, b.N), make(testkit.Latencies, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := plain(0, i); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := secured(0, i); err != nil {
					b.Fatal(err)
				}
				pl, tl = append(pl, t1.Sub(t0)), append(tl, time.Since(t1))
			}
			b.StopTimer()
			pl.Report(b, "plain")
			tl.Report(b, "tls")
			b.ReportMetric(float64(tl.Quantile(0.5))/float64(pl.Quantile(0.5)), "tls/plain-p50")
			const phases = 8
			n := max(b.N, 2400) / phases
			var plainTime, tlsTime time.Duration
			for range phases {
				plainTime += concurrently(b, n, plain)
				tlsTime += concurrently(b, n, secured)
			}
			pr, tr := float64(phases*n)/plainTime.Seconds(), float64(phases*n)/tlsTime.Seconds()
			b.ReportMetric(pr, "plain-ops/s-16-callers")
			b.ReportMetric(tr, "tls-ops/s-16-callers")
			b.ReportMetric(tr/pr, "tls/plain-ops")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// concurrently runs op n times split among 16 callers (1..16) and
// returns the elapsed time.
func concurrently(b *testing.B, n int, op func(caller, i int) error) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += callers {
				if err := op(g+1, i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}
