package gitfront

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzAuthorizationHeader: any header gets 200 (anonymous or a user) or
// 401, never a panic.
func FuzzAuthorizationHeader(f *testing.F) {
	for _, s := range []string{basicHeader("alice", "alice-pw-S3cret"), "Bearer x", "Basic", "Basic ===", "Digest a=b"} {
		f.Add(s)
	}
	h := Authenticate(testAuth(), slog.New(slog.NewTextHandler(io.Discard, nil)))(http.NotFoundHandler())
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest("GET", "/rest/x", nil)
		r.Header.Set("Authorization", header)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != 404 && rec.Code != 401 {
			t.Fatalf("Authorization %q: status %d", header, rec.Code)
		}
	})
}

// FuzzGitPath: any path and query under /scm/ gets a 4xx before git is
// started, never a panic, since no repository exists.
func FuzzGitPath(f *testing.F) {
	for _, s := range []string{"proj/pub.git/info/refs", "../x.git/git-upload-pack", "p/-r.git/git-receive-pack", "p/r.git.git/info/refs"} {
		f.Add(s, "service=git-upload-pack")
	}
	g, err := NewGitHandler(GitConfig{ReposDir: f.TempDir(), Authorizer: AuthorizerFunc(allowAll),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		u := &url.URL{Path: scmPrefix + path, RawQuery: query}
		r := httptest.NewRequest("GET", "/", nil)
		r.URL = u
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, r)
		if rec.Code < 400 || rec.Code >= 500 || g.Stats().Processes != 0 {
			t.Fatalf("%q?%q: status %d, %d processes", path, query, rec.Code, g.Stats().Processes)
		}
	})
}
