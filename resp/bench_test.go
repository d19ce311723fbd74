package resp_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkGoRedisLoad: 50 goroutines of go-redis against one
// redis-server (a plain client) and against a 3-node in-process shoal
// cluster (a ClusterClient, so each command goes to its key's owner),
// SET and GET of 10,000 keys; ops/s and the p99 latency. The shoal nodes
// and the load share this process (and the machine's cores).
func BenchmarkGoRedisLoad(b *testing.B) {
	redisAddr := redisServer(b)
	sc := startShoal(b, 3, nil)
	targets := []struct {
		name string
		c    redis.UniversalClient
	}{
		{"shoal-cluster", redis.NewClusterClient(&redis.ClusterOptions{Addrs: sc.addrs, Username: "admin", Password: adminPass, PoolSize: 60})},
	}
	if redisAddr != "" {
		targets = append([]struct {
			name string
			c    redis.UniversalClient
		}{{"redis-server", redis.NewClient(&redis.Options{Addr: redisAddr, PoolSize: 60})}}, targets...)
	}
	ctx := context.Background()
	for _, tg := range targets {
		defer tg.c.Close()
		for i := range 10000 {
			if err := tg.c.Set(ctx, fmt.Sprintf("key:%d", i), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 0).Err(); err != nil {
				b.Fatal(err)
			}
		}
		for _, op := range []string{"set", "get"} {
			b.Run(tg.name+"/"+op, func(b *testing.B) {
				const workers = 50
				lat := make([][]time.Duration, workers)
				var wg sync.WaitGroup
				start := time.Now()
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < b.N; i += workers {
							k := fmt.Sprintf("key:%d", i%10000)
							t0 := time.Now()
							var err error
							if op == "set" {
								err = tg.c.Set(ctx, k, "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy", 0).Err()
							} else {
								err = tg.c.Get(ctx, k).Err()
							}
							if err != nil {
								b.Error(err)
								return
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				el := time.Since(start)
				reportOps(b, lat, el)
			})
		}
	}
}

// reportOps reports the throughput and p99 latency of the workers'
// samples (lat[w] is worker w's) over el, and returns how many there are.
func reportOps(b *testing.B, lat [][]time.Duration, el time.Duration) int {
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/el.Seconds(), "ops/s")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
	return len(all)
}
