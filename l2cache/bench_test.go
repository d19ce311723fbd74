package l2cache

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// benchEntity is a typical cached entity: a pull request row.
type benchEntity struct {
	ID, RepoID, AuthorID int64
	Title, State         string
	Version              int
	Updated              time.Time
}

func sampleEntity() benchEntity {
	return benchEntity{ID: 42, RepoID: 7, AuthorID: 3, Title: "Fix the flaky clone test", State: "OPEN", Version: 3,
		Updated: time.Unix(1_700_000_000, 0)}
}

// BenchmarkLocalHit compares a LOCAL-mode hit through Typed (ristretto get,
// stamp checks, msgpack decode) with the baseline of a raw ristretto Get of
// the same encoded bytes plus the same msgpack decode, alternating in one
// loop, single goroutine and in parallel; it reports the ratio.
func BenchmarkLocalHit(b *testing.B) {
	c := newLocal(b, Config{})
	r := region(b, c, "pr", ReadWrite)
	typed := Typed[benchEntity]{R: r}
	ctx := context.Background()
	want := sampleEntity()
	enc, _ := msgpack.Marshal(&want)
	raw, err := ristretto.NewCache(&ristretto.Config[string, []byte]{NumCounters: 1e5, MaxCost: 1 << 26, BufferItems: 64, IgnoreInternalCost: true})
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	raw.Set("pr\x0042", enc, int64(len(enc)))
	raw.Wait()
	for i := 0; i < 100; i++ { // until ristretto admits it
		typed.Get(ctx, "42", func(context.Context) (benchEntity, error) { return want, nil })
		c.waitLocal()
		if _, ok := r.lookup("42", nil); ok {
			break
		}
	}
	rawGet := func() {
		v, ok := raw.Get("pr\x0042")
		var e benchEntity
		if !ok || msgpack.Unmarshal(v, &e) != nil {
			b.Fatal("raw miss")
		}
	}
	hit := func() {
		if _, err := typed.Get(ctx, "42", func(context.Context) (benchEntity, error) {
			b.Fatal("a hit was expected")
			return benchEntity{}, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("single", func(b *testing.B) {
		var rawNs, hitNs time.Duration
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			rawGet()
			t1 := time.Now()
			hit()
			rawNs, hitNs = rawNs+t1.Sub(t0), hitNs+time.Since(t1)
		}
		report(b, rawNs, hitNs)
	})
	b.Run("parallel", func(b *testing.B) {
		var rawNs, hitNs atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			var rn, hn time.Duration
			for pb.Next() {
				t0 := time.Now()
				rawGet()
				t1 := time.Now()
				hit()
				rn, hn = rn+t1.Sub(t0), hn+time.Since(t1)
			}
			rawNs.Add(int64(rn))
			hitNs.Add(int64(hn))
		})
		report(b, time.Duration(rawNs.Load()), time.Duration(hitNs.Load()))
	})
}

func report(b *testing.B, raw, hit time.Duration) {
	b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/get")
	b.ReportMetric(float64(hit.Nanoseconds())/float64(b.N), "l2-ns/get")
	b.ReportMetric(float64(hit)/float64(raw), "ratio")
}

// BenchmarkInvalidationLag measures LOCAL-mode invalidation lag on 3 and 8
// in-process nodes over loopback sockets: from Evict on one node until
// every other node has applied the invalidation.
func BenchmarkInvalidationLag(b *testing.B) {
	for _, n := range []int{3, 8} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var nodes []*cluster.Node
			var caches []*Cache
			for i := 1; i <= n; i++ {
				cfg := *cluster.DefaultLoopbackConfig()
				cfg.Name, cfg.Logger = fmt.Sprintf("n%d", i), testkit.Logger(b)
				nd, err := cluster.Start(cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer nd.Close()
				if i > 1 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := nd.Join(ctx, []string{nodes[0].GossipAddr()})
					cancel()
					if err != nil {
						b.Fatal(err)
					}
				}
				nodes = append(nodes, nd)
				caches = append(caches, newLocal(b, Config{Bus: nd.Bus()}))
			}
			for _, c := range caches {
				region(b, c, "pr", NonstrictReadWrite)
			}
			testkit.Eventually(b, 15*time.Second, "all members", func() bool {
				for _, nd := range nodes {
					alive := 0
					for _, m := range nd.Members() {
						if m.State == cluster.StateAlive {
							alive++
						}
					}
					if alive != n {
						return false
					}
				}
				return true
			})
			// A second subscriber on each receiving node runs right after
			// the cache's on the bus's delivery goroutine: it signals that
			// the node has applied the invalidation.
			applied := make(chan struct{}, n)
			for _, nd := range nodes[1:] {
				nd.Bus().Subscribe(RegionTopic("pr"), cluster.SubscriberFuncs{OnMessage: func(cluster.Message) { applied <- struct{}{} }})
			}
			r := caches[0].region("pr")
			ctx := context.Background()
			lat := make(testkit.Latencies, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := r.Evict(ctx, "k"); err != nil {
					b.Fatal(err)
				}
				for j := 0; j < n-1; j++ {
					select {
					case <-applied:
					case <-time.After(10 * time.Second):
						b.Fatal("invalidation never arrived everywhere")
					}
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			lat.Report(b, "lag")
		})
	}
}
