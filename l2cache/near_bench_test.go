package l2cache

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// BenchmarkNearHit compares a NEAR read answered from a near copy with a
// LOCAL hit, as the REST read path makes them, alternating in one loop
// (the same run, the same machine load): an entity read through
// Typed.Cached, then Typed.Get with a loader on a miss (rest's accessors),
// and a query result read through Typed.GetQuery. Each mode runs on its
// own 3-node memnet cluster with read leases; the NEAR key is owned by
// another node, so its hit is a near copy's. It reports each mode's ns per
// read, their ratio (near/local: 1 is the target) and each mode's
// allocations per read.
func BenchmarkNearHit(b *testing.B) {
	ctx := context.Background()
	type arm struct {
		cache  *Cache
		ent    Typed[benchEntity]
		query  Typed[benchEntity]
		key    string
		spaces []string
	}
	want := sampleEntity()
	mk := func(mode string, seed uint64) *arm {
		caches := startLeased(b, seed, 3, mode, InvalidationAsync).caches
		c := caches[0]
		for i, c := range caches {
			testkit.Eventually(b, 20*time.Second, fmt.Sprintf("%s node %d's cache ready", mode, i+1), func() bool { return c.Ready() == nil })
		}
		a := &arm{cache: c, ent: Typed[benchEntity]{R: region(b, c, "pr", ReadWrite)}, spaces: []string{"pull_requests"}}
		qr, err := c.Region("q", QueryRegion, NonstrictReadWrite)
		if err != nil {
			b.Fatal(err)
		}
		a.query = Typed[benchEntity]{R: qr}
		a.key = "42"
		if d := distOf(c); d != nil {
			for i := 0; ; i++ { // a key another node owns: its hit is a near copy's
				a.key = strconv.Itoa(i)
				if d.keeper.Table().Owner(d.partition("pr", a.key)) != d.self {
					break
				}
			}
		}
		load := func(context.Context) (benchEntity, error) { return want, nil }
		regionHits := func() uint64 { return a.ent.R.stats.snapshot().Hits + qr.stats.snapshot().Hits }
		testkit.Eventually(b, 20*time.Second, mode+" hits", func() bool {
			before := c.Stats().Node.NearHits + regionHits()
			if _, err := a.ent.Get(ctx, a.key, load); err != nil {
				b.Fatal(err)
			}
			if _, err := a.query.GetQuery(ctx, "q1", a.spaces, load); err != nil {
				b.Fatal(err)
			}
			c.waitLocal()
			_, ok := a.ent.Cached(a.key)
			hits := regionHits()
			if _, err := a.ent.Get(ctx, a.key, load); err != nil {
				b.Fatal(err)
			}
			if _, err := a.query.GetQuery(ctx, "q1", a.spaces, load); err != nil {
				b.Fatal(err)
			}
			return (ok || mode != cluster.CacheModeLocal) && regionHits()-hits == 2 && c.Stats().Node.NearHits+hits > before
		})
		return a
	}
	local := mk(cluster.CacheModeLocal, 71)
	near := mk(cluster.CacheModeNear, 72)
	// A read that is not a hit (a read lease that lapsed on a loaded
	// machine drops everything) loads, and is counted: the figures are a
	// hit's only while the misses are few.
	var misses atomic.Int64
	noLoad := func(context.Context) (benchEntity, error) {
		misses.Add(1)
		return want, nil
	}
	// entity reads as rest's accessors make them: Cached, then Get.
	entity := func(a *arm) {
		if _, ok := a.ent.Cached(a.key); ok {
			return
		}
		if _, err := a.ent.Get(ctx, a.key, noLoad); err != nil {
			b.Fatal(err)
		}
	}
	query := func(a *arm) {
		if _, err := a.query.GetQuery(ctx, "q1", a.spaces, noLoad); err != nil {
			b.Fatal(err)
		}
	}
	for _, read := range []struct {
		name string
		f    func(*arm)
	}{{"entity", entity}, {"query", query}} {
		misses.Store(0)
		remote := near.cache.Stats().Node.RemoteByKind["get"]
		// Timed in blocks of reads: a clock reading costs about as much
		// as a hit on this machine (kvm-clock).
		const block = 32
		b.Run(read.name+"/single", func(b *testing.B) {
			var localNs, nearNs time.Duration
			for i := 0; i < b.N; i += block {
				n := min(block, b.N-i)
				t0 := time.Now()
				for range n {
					read.f(local)
				}
				t1 := time.Now()
				for range n {
					read.f(near)
				}
				localNs, nearNs = localNs+t1.Sub(t0), nearNs+time.Since(t1)
			}
			reportNear(b, localNs, nearNs)
			b.ReportMetric(testing.AllocsPerRun(100, func() { read.f(local) }), "local-allocs/get")
			b.ReportMetric(testing.AllocsPerRun(100, func() { read.f(near) }), "near-allocs/get")
		})
		b.Run(read.name+"/parallel", func(b *testing.B) {
			var localNs, nearNs atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				var ln, nn time.Duration
				for pb.Next() {
					t0 := time.Now()
					for range block {
						read.f(local)
					}
					t1 := time.Now()
					for range block {
						read.f(near)
					}
					ln, nn = ln+t1.Sub(t0), nn+time.Since(t1)
				}
				localNs.Add(int64(ln))
				nearNs.Add(int64(nn))
			})
			reportNear(b, time.Duration(localNs.Load())/block, time.Duration(nearNs.Load())/block)
		})
		if n, m := near.cache.Stats().Node.RemoteByKind["get"]-remote, misses.Load(); n != 0 || m != 0 {
			b.Logf("%s: %d reads missed, NEAR sent %d gets (a read lease lapsed?): the figures are not only hits'", read.name, m, n)
		}
	}
}

func reportNear(b *testing.B, local, near time.Duration) {
	b.ReportMetric(float64(local.Nanoseconds())/float64(b.N), "local-ns/get")
	b.ReportMetric(float64(near.Nanoseconds())/float64(b.N), "near-ns/get")
	b.ReportMetric(float64(near)/float64(local), "near/local")
	if b.N < 1000 {
		return
	}
	b.Logf("near/local %.2f (local %.0f ns, near %.0f ns per read)", float64(near)/float64(local),
		float64(local.Nanoseconds())/float64(b.N), float64(near.Nanoseconds())/float64(b.N))
}
