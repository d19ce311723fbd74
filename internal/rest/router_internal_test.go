package rest

import (
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"testing"
)

// The router answers as http.ServeMux with the API's patterns did: the
// same endpoint and wildcard values, the same status for unknown paths and
// methods, the same Allow header and the same redirects.
func TestRouterMatchesServeMux(t *testing.T) {
	const repo = Prefix + "/projects/{key}/repos/{slug}"
	const pr = repo + "/pull-requests/{id}"
	patterns := []string{
		"GET " + Prefix + "/projects", "POST " + Prefix + "/projects", "GET " + Prefix + "/projects/{key}",
		"GET " + Prefix + "/projects/{key}/repos", "POST " + Prefix + "/projects/{key}/repos",
		"GET " + repo, "GET " + repo + "/pull-requests", "GET " + pr, "PUT " + pr,
		"GET " + pr + "/comments", "POST " + pr + "/comments",
	}
	mux := http.NewServeMux()
	for _, pat := range patterns {
		mux.HandleFunc(pat, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Route", r.Pattern+" key="+r.PathValue("key")+" slug="+r.PathValue("slug")+" id="+r.PathValue("id"))
		})
	}
	seen := func(name string) handlerFunc {
		return func(w http.ResponseWriter, r *http.Request, p pathParams) error {
			w.Header().Set("X-Route", name+" key="+p.key+" slug="+p.slug+" id="+p.id)
			return nil
		}
	}
	a := &api{}
	a.router = router{
		projects: newEndpoint(seen("GET "+Prefix+"/projects"), seen("POST "+Prefix+"/projects"), nil),
		project:  newEndpoint(seen("GET "+Prefix+"/projects/{key}"), nil, nil),
		repos:    newEndpoint(seen("GET "+Prefix+"/projects/{key}/repos"), seen("POST "+Prefix+"/projects/{key}/repos"), nil),
		repo:     newEndpoint(seen("GET "+repo), nil, nil),
		pulls:    newEndpoint(seen("GET "+repo+"/pull-requests"), nil, nil),
		pull:     newEndpoint(seen("GET "+pr), nil, seen("PUT "+pr)),
		comments: newEndpoint(seen("GET "+pr+"/comments"), seen("POST "+pr+"/comments"), nil),
	}
	paths := []string{
		"/projects", "/projects/PROJ", "/projects/PROJ/repos", "/projects/PROJ/repos/secret",
		"/projects/PROJ/repos/secret/pull-requests", "/projects/PROJ/repos/secret/pull-requests/7",
		"/projects/PROJ/repos/secret/pull-requests/7/comments",
		"/projects/PROJ/repos/secret/pull-requests/7/comments/1", "/projects/PROJ/repos/secret/pull-requests/7/x",
		"/projects/PROJ/x/secret", "/projects/PROJ/repos/secret/x/7", "/nothing/here", "", "/",
		"/projects/", "/projects/PROJ/", "/projects//repos", "/projects/PROJ/repos/./secret",
		"/projects/PROJ/repos/../repos/secret?x=1", "/projects/PR%4FJ/repos/a%2Fb", "/project%73/PROJ",
		"/projects/PROJ/repos/%2e%2e/pull-requests", "/projects/a/repos/b/pull-requests/1/comments/x/y/z",
	}
	for _, path := range paths {
		for _, method := range []string{"GET", "HEAD", "POST", "PUT", "DELETE"} {
			target := Prefix + path
			if path == "" {
				target = "/rest/api/1.0"
			}
			want, got := httptest.NewRecorder(), httptest.NewRecorder()
			mux.ServeHTTP(want, httptest.NewRequest(method, target, nil))
			a.ServeHTTP(got, httptest.NewRequest(method, target, nil))
			for _, h := range []string{"X-Route", "Allow", "Location"} {
				if want.Header().Get(h) != got.Header().Get(h) {
					t.Errorf("%s %s: %s %q, the mux's %q", method, target, h, got.Header().Get(h), want.Header().Get(h))
				}
			}
			if want.Code != got.Code {
				t.Errorf("%s %s: status %d, the mux's %d", method, target, got.Code, want.Code)
			}
			if got.Code >= 400 && !strings.Contains(got.Header().Get("Content-Type"), "json") {
				t.Errorf("%s %s: a %d that is not JSON: %v", method, target, got.Code, got.Header())
			}
		}
	}
}

// cleanPath's shortcut for a path with nothing to clean answers what
// path.Clean (keeping a trailing slash) does, on every path of up to 7
// characters of '/', '.' and 'a'.
func TestCleanPathShortcut(t *testing.T) {
	want := func(p string) string {
		if p == "" || p[0] != '/' {
			p = "/" + p
		}
		c := path.Clean(p)
		if strings.HasSuffix(p, "/") && c != "/" {
			c += "/"
		}
		return c
	}
	var walk func(p string)
	walk = func(p string) {
		if got, w := cleanPath(p), want(p); got != w {
			t.Errorf("cleanPath(%q) = %q, want %q", p, got, w)
		}
		if len(p) < 7 {
			for _, c := range "/.a" {
				walk(p + string(c))
			}
		}
	}
	walk("")
}
