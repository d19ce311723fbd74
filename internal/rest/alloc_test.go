package rest_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

// A cached read (GET pull request, LOCAL hits on the pull request, its
// repository and its author) allocates nothing in the handler when the
// response writer does not: the cache's hits build no key strings and no
// loaders, the JSON is appended into a pooled buffer. BenchmarkCachedRead
// measures the time; this keeps the allocations from creeping back.
func TestCachedReadAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops items at random")
	}
	path := domaintest.Path(t)
	w := seedWorld(t, path)
	for _, c := range []struct{ repo, user string }{{"open", "reader"}, {"open", "stranger"}, {"secret", "reader"}} {
		t.Run(c.repo+"/"+c.user, func(t *testing.T) {
			id := w.prs[0]
			if c.repo == "open" {
				id = w.open[0]
			}
			cn := startNode(t, path, newLocalCache(t, l2cache.Config{}), w)
			h := cn.srv.Config.Handler
			req := httptest.NewRequest("GET", rest.Prefix+"/projects/PROJ/repos/"+c.repo+"/pull-requests/"+idString(id), nil)
			req.Header.Set(userHeader, c.user)
			rw := &reusedWriter{header: http.Header{}}
			testkit.Eventually(t, 5*time.Second, "the cache to serve the pull request", func() bool {
				rw.serve(t, h, req)
				return cn.cache.Stats().Regions[rest.RegionPullRequests].Hits > 0
			})
			if allocs := testing.AllocsPerRun(500, func() { rw.serve(t, h, req) }); allocs != 0 {
				t.Errorf("%.1f allocations per cached read", allocs)
			}
		})
	}
}

// reusedWriter is a ResponseWriter that keeps its header map and body
// buffer from one request to the next, so that it allocates nothing.
type reusedWriter struct {
	header http.Header
	code   int
	body   []byte
}

func (w *reusedWriter) Header() http.Header  { return w.header }
func (w *reusedWriter) WriteHeader(code int) { w.code = code }
func (w *reusedWriter) Write(b []byte) (int, error) {
	w.body = append(w.body, b...)
	return len(b), nil
}

func (w *reusedWriter) serve(t *testing.T, h http.Handler, req *http.Request) {
	clear(w.header)
	w.code, w.body = 0, w.body[:0]
	h.ServeHTTP(w, req)
	if w.code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", req.URL, w.code, w.body)
	}
}
