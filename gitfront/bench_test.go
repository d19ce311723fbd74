package gitfront

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the front, not a recorder.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

func benchFront(b *testing.B, bare http.Handler) *Front {
	f, err := New(Config{Web: bare, Authenticator: testAuth(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkFrontOverhead times, alternately in one loop, a bare handler
// and the same handler behind the front (classification, pool admission
// and release, drain tracking, authentication), and reports both and the
// difference. The Authenticator is the in-memory fake: a real one's
// password hash check (bcrypt, tens of ms) is not the front's cost.
func BenchmarkFrontOverhead(b *testing.B) {
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	f := benchFront(b, bare)
	for _, tc := range []struct{ name, ua, auth string }{
		{"web-anonymous", "curl/8", ""},
		{"web-basic", "curl/8", basicHeader("alice", "alice-pw-S3cret")},
		{"web-bearer", "curl/8", "Bearer tok-alice-0123456789"},
		{"git-agent-anonymous", "git/2.39.5", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/rest/api/1.0/projects/P/repos?limit=25", nil)
			r.Header.Set("User-Agent", tc.ua)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := &discardWriter{h: http.Header{}}
			var bareT, frontT time.Duration
			for b.Loop() {
				t0 := time.Now()
				bare.ServeHTTP(w, r)
				t1 := time.Now()
				f.ServeHTTP(w, r)
				frontT += time.Since(t1)
				bareT += t1.Sub(t0)
			}
			n := float64(b.N)
			b.ReportMetric(float64(bareT.Nanoseconds())/n, "bare-ns/req")
			b.ReportMetric(float64(frontT.Nanoseconds())/n, "front-ns/req")
			b.ReportMetric(float64((frontT-bareT).Nanoseconds())/n, "overhead-ns/req")
		})
	}
}

// BenchmarkFrontParallel serves anonymous web requests from every core
// through the front (one pool's semaphore and the drain tracker shared)
// and bare, for contention.
func BenchmarkFrontParallel(b *testing.B) {
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	for _, h := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"front", benchFront(b, bare)}} {
		b.Run(h.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				r := httptest.NewRequest("GET", "/rest/api/1.0/projects", nil)
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					h.h.ServeHTTP(w, r)
				}
			})
		})
	}
}

// BenchmarkInfoRefs times a v0 ref advertisement of a small repository
// over loopback HTTP, from git (one upload-pack process per request) and
// from the advertisement cache.
func BenchmarkInfoRefs(b *testing.B) {
	repos := b.TempDir()
	if err := InitBare(b.Context(), repos, "proj", "pub"); err != nil {
		b.Fatal(err)
	}
	for _, cached := range []bool{false, true} {
		name := map[bool]string{false: "git", true: "cached"}[cached]
		b.Run(name, func(b *testing.B) {
			gc := GitConfig{ReposDir: repos, Authorizer: AuthorizerFunc(allowAll)}
			if cached {
				gc.AdvertGenerations = &memGenerations{gen: map[string]uint64{}}
			}
			f, err := New(Config{Web: http.NotFoundHandler(), Authenticator: testAuth(), Git: gc,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			srv := serve(b, f)
			c := testClient(b)
			url := srv.URL + "/scm/proj/pub.git/info/refs?service=git-upload-pack"
			for b.Loop() {
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
