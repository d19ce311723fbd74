package rest_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

// BenchmarkGetPullRequest serves GET pull request (private repository, a
// reader: one permission query per request either way) in process,
// without the network: through a warm LOCAL cache, and straight from
// SQLite (Cache nil). It reports each path's ns/op and sql/cache, the
// speed-up.
func BenchmarkGetPullRequest(b *testing.B) {
	for _, repo := range []string{"secret", "open"} {
		b.Run(repo, func(b *testing.B) { benchGet(b, repo) })
	}
}

func benchGet(b *testing.B, repo string) {
	path := domaintest.Path(b)
	w := seedWorld(b, path)
	id := w.prs[0]
	if repo == "open" {
		id = w.open[0]
	}
	url := rest.Prefix + "/projects/PROJ/repos/" + repo + "/pull-requests/" + idString(id)
	cn := startNode(b, path, newLocalCache(b, l2cache.Config{}), w)
	cached, direct := cn.srv.Config.Handler, startNode(b, path, nil, w).srv.Config.Handler
	testkit.Eventually(b, 5*time.Second, "the cache to serve the pull request", func() bool {
		serve(b, cached, url)
		return cn.cache.Stats().Regions[rest.RegionPullRequests].Hits > 0
	})
	b.ResetTimer()
	cacheNs := timeLoop(b, cached, url)
	sqlNs := timeLoop(b, direct, url)
	b.ReportMetric(cacheNs, "cache-ns/op")
	b.ReportMetric(sqlNs, "sql-ns/op")
	b.ReportMetric(sqlNs/cacheNs, "sql/cache")
}

// timeLoop serves url b.N times and returns the mean ns per request.
func timeLoop(b *testing.B, h http.Handler, url string) float64 {
	start := time.Now()
	for i := 0; i < b.N; i++ {
		serve(b, h, url)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(b.N)
}

func serve(b *testing.B, h http.Handler, url string) {
	req := httptest.NewRequest("GET", url, nil)
	req.Header.Set(userHeader, "reader")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		b.Fatalf("GET %s: %d %s", url, rec.Code, rec.Body)
	}
}

func idString(id int64) string { return strconv.FormatInt(id, 10) }

// BenchmarkCachedRead is the cached REST read alone: GET pull request
// through a warm LOCAL cache (the pull request, its repository and its
// author are cache hits), in process, with allocations per request.
// "secret" is a private repository (a reader: one permission query in
// SQLite per request); "open" a public one (no query at all).
//
//	go test -run '^$' -bench CachedRead -benchmem -count 3 ./internal/rest
func BenchmarkCachedRead(b *testing.B) {
	for _, repo := range []string{"secret", "open"} {
		b.Run(repo, func(b *testing.B) {
			path := domaintest.Path(b)
			w := seedWorld(b, path)
			id := w.prs[0]
			if repo == "open" {
				id = w.open[0]
			}
			url := rest.Prefix + "/projects/PROJ/repos/" + repo + "/pull-requests/" + idString(id)
			cn := startNode(b, path, newLocalCache(b, l2cache.Config{}), w)
			h := cn.srv.Config.Handler
			testkit.Eventually(b, 5*time.Second, "the cache to serve the pull request", func() bool {
				serve(b, h, url)
				return cn.cache.Stats().Regions[rest.RegionPullRequests].Hits > 0
			})
			before := cn.cache.Stats().Regions
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU(b)
			for range b.N {
				serve(b, h, url)
			}
			cpu := processCPU(b) - cpu0
			b.StopTimer()
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			after := cn.cache.Stats().Regions
			for _, r := range []string{rest.RegionPullRequests, rest.RegionRepositories, rest.RegionUsers} {
				if after[r].Misses != before[r].Misses {
					b.Fatalf("region %s missed during the loop", r)
				}
			}
		})
	}
}

// BenchmarkCachedReadHandler is BenchmarkCachedRead with only the
// handler timed: the requests and recorders are made in batches with the
// timer stopped (httptest.NewRequest parses a request line through a new
// 4 KiB bufio.Reader, about half of BenchmarkCachedRead's time and bytes,
// work that net/http's server does once per connection), so ns/op and
// allocs/op are those of ServeHTTP alone.
//
//	go test -run '^$' -bench CachedReadHandler -benchmem -count 3 ./internal/rest
func BenchmarkCachedReadHandler(b *testing.B) {
	const batch = 512
	for _, repo := range []string{"secret", "open"} {
		b.Run(repo, func(b *testing.B) {
			path := domaintest.Path(b)
			w := seedWorld(b, path)
			id := w.prs[0]
			if repo == "open" {
				id = w.open[0]
			}
			url := rest.Prefix + "/projects/PROJ/repos/" + repo + "/pull-requests/" + idString(id)
			cn := startNode(b, path, newLocalCache(b, l2cache.Config{}), w)
			h := cn.srv.Config.Handler
			testkit.Eventually(b, 5*time.Second, "the cache to serve the pull request", func() bool {
				serve(b, h, url)
				return cn.cache.Stats().Regions[rest.RegionPullRequests].Hits > 0
			})
			before := cn.cache.Stats().Regions
			var cpu time.Duration
			reqs := make([]*http.Request, batch)
			recs := make([]*httptest.ResponseRecorder, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(batch, b.N-done)
				b.StopTimer()
				for i := range n {
					reqs[i] = httptest.NewRequest("GET", url, nil)
					reqs[i].Header.Set(userHeader, "reader")
					recs[i] = httptest.NewRecorder()
				}
				b.StartTimer()
				cpu0 := processCPU(b)
				for i := range n {
					h.ServeHTTP(recs[i], reqs[i])
				}
				cpu += processCPU(b) - cpu0
				b.StopTimer()
				for i := range n {
					if recs[i].Code != 200 {
						b.Fatalf("GET %s: %d %s", url, recs[i].Code, recs[i].Body)
					}
				}
				done += n
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			after := cn.cache.Stats().Regions
			for _, r := range []string{rest.RegionPullRequests, rest.RegionRepositories, rest.RegionUsers} {
				if after[r].Misses != before[r].Misses {
					b.Fatalf("region %s missed during the loop", r)
				}
			}
		})
	}
}

// processCPU is the CPU time the process has used (user and system, every
// thread: the garbage collector's work is included). On a machine shared
// with other work it varies far less than the wall time does, because
// time spent waiting for a core is not counted.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
