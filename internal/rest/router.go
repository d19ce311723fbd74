package rest

import (
	"net/http"
	"net/url"
	"path"
	"strings"
)

// The API routes its requests itself rather than through http.ServeMux:
// its paths have one fixed shape, and matching them by hand costs a few
// string comparisons where the mux matched a pattern tree, allocated the
// wildcard values and, to answer its own 404 and 405 as JSON, had to be
// asked twice or have its writer wrapped. The answers are the mux's: a
// path that is not clean is redirected (307) to its clean form, segments
// are matched unescaped, GET routes serve HEAD too, an unknown path is 404
// and a known path with another method 405 with Allow — both as JSON
// errors.

// pathParams are the wildcard segments of the request's path, unescaped
// ("" where the route has none): /projects/{key}/repos/{slug}/pull-requests/{id}.
type pathParams struct{ key, slug, id string }

// handlerFunc is an endpoint's method: a non-nil error is answered by
// fail (and the handler must not have written anything).
type handlerFunc func(w http.ResponseWriter, r *http.Request, p pathParams) error

// endpoint is one path shape's methods (nil: not allowed).
type endpoint struct {
	get, post, put handlerFunc
	allow          string // the Allow header of a 405, as http.ServeMux writes it
}

func newEndpoint(get, post, put handlerFunc) *endpoint {
	e := &endpoint{get: get, post: post, put: put}
	var methods []string // in the mux's (sorted) order
	if get != nil {
		methods = append(methods, http.MethodGet, http.MethodHead)
	}
	if post != nil {
		methods = append(methods, http.MethodPost)
	}
	if put != nil {
		methods = append(methods, http.MethodPut)
	}
	e.allow = strings.Join(methods, ", ")
	return e
}

func (e *endpoint) method(m string) handlerFunc {
	switch m {
	case http.MethodGet, http.MethodHead:
		return e.get
	case http.MethodPost:
		return e.post
	case http.MethodPut:
		return e.put
	}
	return nil
}

// router holds the API's endpoints, one per path shape below Prefix.
type router struct {
	projects, project, repos, repo, pulls, pull, comments *endpoint
}

func (a *api) routes() {
	a.router = router{
		projects: newEndpoint(a.listProjects, a.createProject, nil),
		project:  newEndpoint(a.getProject, nil, nil),
		repos:    newEndpoint(a.listRepositories, a.createRepository, nil),
		repo:     newEndpoint(a.getRepository, nil, nil),
		pulls:    newEndpoint(a.listPullRequests, nil, nil),
		pull:     newEndpoint(a.getPullRequest, nil, a.updatePullRequest),
		comments: newEndpoint(a.listComments, a.createComment, nil),
	}
}

// maxSegments is one more than the longest route has, so that a longer
// path is told apart.
const maxSegments = 8

// match finds the endpoint of an escaped path, with its wildcards; nil if
// no route has the path's shape.
func (rt *router) match(escaped string) (*endpoint, pathParams) {
	rest, ok := strings.CutPrefix(escaped, Prefix+"/")
	if !ok {
		return nil, pathParams{}
	}
	var segs [maxSegments]string
	n := 0
	for {
		seg, more, found := strings.Cut(rest, "/")
		if seg == "" || n == maxSegments {
			return nil, pathParams{} // an empty segment (a trailing slash), or too many
		}
		segs[n] = unescapeSegment(seg)
		n++
		if !found {
			break
		}
		rest = more
	}
	if segs[0] != "projects" {
		return nil, pathParams{}
	}
	p := pathParams{key: segs[1], slug: segs[3], id: segs[5]}
	switch {
	case n == 1:
		return rt.projects, p
	case n == 2:
		return rt.project, p
	case segs[2] != "repos":
	case n == 3:
		return rt.repos, p
	case n == 4:
		return rt.repo, p
	case segs[4] != "pull-requests":
	case n == 5:
		return rt.pulls, p
	case n == 6:
		return rt.pull, p
	case n == 7 && segs[6] == "comments":
		return rt.comments, p
	}
	return nil, pathParams{}
}

// unescapeSegment is a path segment's value, as the mux unescapes it (a
// malformed escape is left as it is).
func unescapeSegment(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// cleanPath is p without empty, "." and ".." segments, keeping a trailing
// slash: what the mux redirects a path to.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		// No empty, "." or ".." segment: path.Clean would return p (or
		// p without its trailing slash, which is put back below).
		return p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// ServeHTTP routes the request to its endpoint.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.RequestURI == "*" {
		writeJSON(w, http.StatusBadRequest, errorBody(http.StatusText(http.StatusBadRequest)))
		return
	}
	escaped := r.URL.EscapedPath()
	if clean := cleanPath(escaped); clean != escaped {
		u := &url.URL{Path: clean, RawQuery: r.URL.RawQuery}
		http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
		return
	}
	e, p := a.router.match(escaped)
	if e == nil {
		writeJSON(w, http.StatusNotFound, errorBody(http.StatusText(http.StatusNotFound)))
		return
	}
	h := e.method(r.Method)
	if h == nil {
		w.Header().Set("Allow", e.allow)
		writeJSON(w, http.StatusMethodNotAllowed, errorBody(http.StatusText(http.StatusMethodNotAllowed)))
		return
	}
	if err := h(w, r, p); err != nil {
		a.fail(w, r, err)
	}
}
