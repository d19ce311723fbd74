package rest_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

func TestProjects(t *testing.T) {
	n, _ := setup(t)
	var p page[struct{ Key string }]
	n.do(t, "GET", "/projects?limit=2", "", nil).want(t, 200).decode(t, &p)
	if p.Size != 2 || p.IsLastPage || p.NextPageStart == nil || *p.NextPageStart != 2 || p.Values[0].Key != "ALPHA" {
		t.Fatalf("first page %+v", p)
	}
	p = page[struct{ Key string }]{}
	n.do(t, "GET", "/projects?start=2&limit=2", "", nil).want(t, 200).decode(t, &p)
	if p.Size != 1 || !p.IsLastPage || p.NextPageStart != nil || p.Values[0].Key != "PROJ" {
		t.Fatalf("last page %+v", p)
	}
	var one struct{ Key, Name string }
	n.do(t, "GET", "/projects/BETA", "", nil).want(t, 200).decode(t, &one)
	if one.Name != "Project BETA" {
		t.Fatalf("project %+v", one)
	}
	n.do(t, "GET", "/projects/NOPE", "", nil).want(t, 404)
	if m := n.do(t, "GET", "/projects/no-pe", "", nil).want(t, 400).message(); !strings.Contains(m, "project key") {
		t.Fatalf("message %q", m)
	}
}

// POST /projects creates a project as Bitbucket does: administrators
// only, a checked key and name, 409 for a taken key, and the cached
// project list shows it at once.
func TestCreateProject(t *testing.T) {
	n, _ := setup(t)
	var before page[struct{ Key string }]
	n.do(t, "GET", "/projects", "", nil).want(t, 200).decode(t, &before) // cached: the create must invalidate it
	body := []byte(`{"key": "GAMMA", "name": "Gamma", "description": "the third"}`)
	n.do(t, "POST", "/projects", "", body).want(t, 401)
	if m := n.do(t, "POST", "/projects", "owner", body).want(t, 403).message(); !strings.Contains(m, "administrators") {
		t.Fatalf("403 message %q", m)
	}
	for _, bad := range []string{`{"key": "no-pe", "name": "x"}`, `{"key": "", "name": "x"}`, `{"key": "1AB", "name": "x"}`,
		`{"key": "OK", "name": ""}`, `{"key": "OK", "name": "x", "avatar": 1}`, `{"key": 5, "name": "x"}`, `not json`} {
		n.do(t, "POST", "/projects", "root", []byte(bad)).want(t, 400)
	}
	r := n.do(t, "POST", "/projects", "root", body).want(t, 201)
	var p struct{ Key, Name, Description, Type string }
	r.decode(t, &p)
	if p.Key != "GAMMA" || p.Name != "Gamma" || p.Description != "the third" || p.Type != "NORMAL" {
		t.Fatalf("created %+v", p)
	}
	if loc := r.header.Get("Location"); loc != rest.Prefix+"/projects/GAMMA" {
		t.Fatalf("Location %q", loc)
	}
	n.do(t, "POST", "/projects", "root", body).want(t, 409)
	n.do(t, "POST", "/projects", "root", []byte(`{"key": "PROJ", "name": "again"}`)).want(t, 409)
	var after page[struct{ Key string }]
	n.do(t, "GET", "/projects", "", nil).want(t, 200).decode(t, &after)
	if after.Size != before.Size+1 {
		t.Fatalf("the project list has %d projects after the create, %d before", after.Size, before.Size)
	}
	n.do(t, "GET", "/projects/GAMMA", "stranger", nil).want(t, 200)
	// The new project takes repositories.
	n.do(t, "POST", "/projects/GAMMA/repos", "root", []byte(`{"name": "first"}`)).want(t, 201)
}

func TestRepositoriesVisibility(t *testing.T) {
	n, _ := setup(t)
	for user, want := range map[string]string{"": "open", "stranger": "open", "reader": "open secret", "owner": "open secret", "root": "open secret"} {
		var p page[struct{ Slug string }]
		n.do(t, "GET", "/projects/PROJ/repos", user, nil).want(t, 200).decode(t, &p)
		var got []string
		for _, v := range p.Values {
			got = append(got, v.Slug)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%q lists %v, want %s", user, got, want)
		}
	}
	n.do(t, "GET", "/projects/PROJ/repos/secret", "stranger", nil).want(t, 404)
	n.do(t, "GET", "/projects/PROJ/repos/secret", "", nil).want(t, 404)
	n.do(t, "GET", "/projects/PROJ/repos/open", "", nil).want(t, 200)
	var repo struct {
		Slug    string
		Public  bool
		Project struct{ Key string }
	}
	n.do(t, "GET", "/projects/PROJ/repos/secret", "reader", nil).want(t, 200).decode(t, &repo)
	if repo.Slug != "secret" || repo.Public || repo.Project.Key != "PROJ" {
		t.Fatalf("repository %+v", repo)
	}
	n.do(t, "GET", "/projects/PROJ/repos/nope", "root", nil).want(t, 404)
	n.do(t, "GET", "/projects/NOPE/repos", "root", nil).want(t, 404)
}

func TestCreateRepository(t *testing.T) {
	n, _ := setup(t)
	// Cache the list first: the create must invalidate it.
	n.do(t, "GET", "/projects/PROJ/repos", "root", nil).want(t, 200)
	body := []byte(`{"name": "New Service", "scmId": "git", "public": true}`)
	n.do(t, "POST", "/projects/PROJ/repos", "", body).want(t, 401)
	n.do(t, "POST", "/projects/PROJ/repos", "writer", body).want(t, 403)
	n.do(t, "POST", "/projects/NOPE/repos", "root", body).want(t, 404)
	r := n.do(t, "POST", "/projects/PROJ/repos", "owner", body).want(t, 201)
	if loc := r.header.Get("Location"); loc != rest.Prefix+"/projects/PROJ/repos/new-service" {
		t.Fatalf("Location %q", loc)
	}
	if n.hooks.Load() != 1 {
		t.Fatalf("hook ran %d times", n.hooks.Load())
	}
	n.do(t, "POST", "/projects/PROJ/repos", "root", body).want(t, 409)
	n.do(t, "POST", "/projects/PROJ/repos", "root", []byte(`{"name": "x", "slug": "../x"}`)).want(t, 400)
	n.do(t, "POST", "/projects/PROJ/repos", "root", []byte(`{"name": "x", "scmId": "hg"}`)).want(t, 400)
	n.do(t, "POST", "/projects/PROJ/repos", "root", []byte(`{"name": ""}`)).want(t, 400)
	for _, bad := range []string{"a..b", "-x", "with space", "x.lock"} {
		if m := n.do(t, "POST", "/projects/PROJ/repos", "root", jsonBody(map[string]any{"name": "x", "defaultBranch": bad})).want(t, 400).message(); !strings.Contains(m, "defaultBranch") {
			t.Errorf("defaultBranch %q: %q", bad, m)
		}
	}
	n.do(t, "POST", "/projects/PROJ/repos", "root", []byte(`{"name": "With Branch", "defaultBranch": "develop"}`)).want(t, 201)
	if b, _ := n.branches.Load("PROJ/with-branch"); b != "develop" {
		t.Fatalf("the hook got default branch %q, want develop", b)
	}
	if b, _ := n.branches.Load("PROJ/new-service"); b != "" {
		t.Fatalf("without defaultBranch the hook got %q", b)
	}
	var p page[struct{ Slug string }]
	n.do(t, "GET", "/projects/PROJ/repos", "root", nil).want(t, 200).decode(t, &p)
	if p.Size != 4 || p.Values[0].Slug != "new-service" {
		t.Fatalf("after the create the list is %+v", p)
	}
	n.do(t, "GET", "/projects/PROJ/repos/new-service", "", nil).want(t, 200)
	// A failing hook undoes the repository.
	n.do(t, "POST", "/projects/PROJ/repos", "root", []byte(`{"name": "hook fails"}`)).want(t, 500)
	n.do(t, "GET", "/projects/PROJ/repos/hook-fails", "root", nil).want(t, 404)
}

func TestPullRequestPaging(t *testing.T) {
	n, w := setup(t)
	var seen []int64
	start := 0
	for pages := 0; ; pages++ {
		var p page[pr]
		n.do(t, "GET", fmt.Sprintf("/projects/PROJ/repos/secret/pull-requests?state=ALL&limit=3&start=%d", start), "reader", nil).want(t, 200).decode(t, &p)
		for _, v := range p.Values {
			seen = append(seen, v.ID)
		}
		if p.Start != start || p.Limit != 3 || pages > 5 {
			t.Fatalf("page %+v", p)
		}
		if p.IsLastPage {
			if p.NextPageStart != nil || p.Size != 1 {
				t.Fatalf("last page %+v", p)
			}
			break
		}
		start = *p.NextPageStart
	}
	want := fmt.Sprint(reverse(w.prs))
	if fmt.Sprint(seen) != want {
		t.Fatalf("paged through %v, want %v (newest first)", seen, want)
	}
	var p page[pr]
	n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests", "reader", nil).want(t, 200).decode(t, &p)
	if p.Size != 7 || !p.IsLastPage || p.Values[0].State != "OPEN" || p.Values[0].Author.User.Name != "writer" {
		t.Fatalf("default (OPEN) page %+v", p)
	}
	n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests?state=MERGED", "reader", nil).want(t, 200).decode(t, &p)
	if p.Size != 0 || p.Values == nil {
		t.Fatalf("MERGED page %+v", p)
	}
	n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests", "stranger", nil).want(t, 404)
	for _, q := range []string{"state=LOST", "start=-1", "limit=0", "limit=abc", "start=1e3"} {
		if m := n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests?"+q, "reader", nil).want(t, 400).message(); m == "" {
			t.Errorf("?%s: no message", q)
		}
	}
}

func reverse(ids []int64) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[len(ids)-1-i] = id
	}
	return out
}

func TestUpdatePullRequest(t *testing.T) {
	n, w := setup(t)
	id := w.prs[0]
	var got pr
	n.do(t, "GET", prPath(id), "reader", nil).want(t, 200).decode(t, &got) // now cached
	n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests?state=MERGED", "reader", nil).want(t, 200)
	n.do(t, "PUT", prPath(id), "writer", jsonBody(map[string]any{"version": 0, "title": "Renamed", "state": "MERGED"})).want(t, 200).decode(t, &got)
	if got.Version != 1 || got.Title != "Renamed" || got.State != "MERGED" {
		t.Fatalf("answer to the update %+v", got)
	}
	n.do(t, "GET", prPath(id), "reader", nil).want(t, 200).decode(t, &got)
	if got.Version != 1 || got.Title != "Renamed" {
		t.Fatalf("the next read got %+v: the cache was not invalidated", got)
	}
	var merged page[pr]
	n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests?state=MERGED", "reader", nil).want(t, 200).decode(t, &merged)
	if merged.Size != 1 || merged.Values[0].ID != id {
		t.Fatalf("the cached MERGED list was not invalidated: %+v", merged)
	}
	if m := n.do(t, "PUT", prPath(id), "writer", jsonBody(map[string]any{"version": 0, "title": "Stale"})).want(t, 409).message(); !strings.Contains(m, "version") {
		t.Fatalf("409 message %q", m)
	}
	n.do(t, "PUT", prPath(id), "reader", jsonBody(map[string]any{"version": 1, "title": "x"})).want(t, 403)
	n.do(t, "PUT", prPath(id), "stranger", jsonBody(map[string]any{"version": 1, "title": "x"})).want(t, 404)
	n.do(t, "PUT", prPath(id), "", jsonBody(map[string]any{"version": 1, "title": "x"})).want(t, 401)
	n.do(t, "PUT", prPath(w.open[0]), "writer", jsonBody(map[string]any{"version": 0})).want(t, 404) // not in "secret"
	n.do(t, "PUT", prPath(99999), "writer", jsonBody(map[string]any{"version": 0})).want(t, 404)
	n.do(t, "GET", prPath(id), "reader", nil).want(t, 200).decode(t, &got)
	if got.Version != 1 || got.Title != "Renamed" {
		t.Fatalf("a refused update changed the pull request: %+v", got)
	}
}

func TestComments(t *testing.T) {
	n, w := setup(t)
	path := prPath(w.prs[0]) + "/comments"
	type comment struct {
		ID     int64
		Text   string
		Author struct{ Name string }
	}
	var p page[comment]
	n.do(t, "GET", path+"?limit=2", "reader", nil).want(t, 200).decode(t, &p)
	if p.Size != 2 || p.IsLastPage || p.Values[0].Text != "comment 0" || p.Values[0].Author.Name != "reader" {
		t.Fatalf("first page %+v", p)
	}
	n.do(t, "GET", path+"?start=2&limit=2", "reader", nil).want(t, 200).decode(t, &p) // cached, then invalidated below
	var c comment
	n.do(t, "POST", path, "writer", []byte(`{"text": "Ship it"}`)).want(t, 201).decode(t, &c)
	if c.Text != "Ship it" || c.Author.Name != "writer" || c.ID == 0 {
		t.Fatalf("created %+v", c)
	}
	n.do(t, "GET", path+"?start=2&limit=2", "reader", nil).want(t, 200).decode(t, &p)
	if p.Size != 2 || p.Values[1].Text != "Ship it" || !p.IsLastPage {
		t.Fatalf("after the comment, the page is %+v", p)
	}
	n.do(t, "POST", path, "reader", []byte(`{"text": "x"}`)).want(t, 403)
	n.do(t, "POST", path, "", []byte(`{"text": "x"}`)).want(t, 401)
	n.do(t, "POST", path, "stranger", []byte(`{"text": "x"}`)).want(t, 404)
	n.do(t, "GET", path, "stranger", nil).want(t, 404)
	n.do(t, "POST", path, "writer", []byte(`{"text": "   "}`)).want(t, 400)
	n.do(t, "GET", prPath(99999)+"/comments", "reader", nil).want(t, 404)
}

// Malformed requests get 4xx with a message, and write nothing.
func TestBadInput(t *testing.T) {
	n, w := setup(t)
	pr0 := prPath(w.prs[0])
	big := []byte(`{"text": "` + strings.Repeat("x", 1<<20) + `"}`)
	for _, c := range []struct {
		name, method, path string
		body               []byte
		contentType        string
		status             int
	}{
		{"bad JSON", "PUT", pr0, []byte(`{"version": 0,`), "", 400},
		{"not an object", "PUT", pr0, []byte(`[1, 2]`), "", 400},
		{"unknown field", "PUT", pr0, []byte(`{"version": 0, "titel": "x"}`), "", 400},
		{"wrong type", "PUT", pr0, []byte(`{"version": "0", "title": "x"}`), "", 400},
		{"fractional version", "PUT", pr0, []byte(`{"version": 0.5}`), "", 400},
		{"missing version", "PUT", pr0, []byte(`{"title": "x"}`), "", 400},
		{"negative version", "PUT", pr0, []byte(`{"version": -1, "title": "x"}`), "", 400},
		{"bad state", "PUT", pr0, []byte(`{"version": 0, "state": "GONE"}`), "", 400},
		{"empty title", "PUT", pr0, []byte(`{"version": 0, "title": ""}`), "", 400},
		{"trailing data", "PUT", pr0, []byte(`{"version": 0} {}`), "", 400},
		{"empty body", "PUT", pr0, []byte(``), "", 400},
		{"invalid UTF-8", "POST", pr0 + "/comments", []byte("{\"text\": \"\xff\xfe\"}"), "", 400},
		{"NUL in text", "POST", pr0 + "/comments", []byte(`{"text": "a\u0000b"}`), "", 400},
		{"huge body", "POST", pr0 + "/comments", big, "", 413},
		{"not JSON", "POST", pr0 + "/comments", []byte(`text=x`), "application/x-www-form-urlencoded", 415},
		{"non-numeric id", "GET", "/projects/PROJ/repos/secret/pull-requests/abc", nil, "", 400},
		{"negative id", "GET", "/projects/PROJ/repos/secret/pull-requests/-3", nil, "", 400},
		{"zero id", "PUT", "/projects/PROJ/repos/secret/pull-requests/0", []byte(`{"version": 0}`), "", 400},
		{"huge id", "GET", "/projects/PROJ/repos/secret/pull-requests/99999999999999999999", nil, "", 400},
		{"traversal slug", "GET", "/projects/PROJ/repos/%2e%2e/pull-requests", nil, "", 400},
		{"encoded slash slug", "GET", "/projects/PROJ/repos/a%2Fb", nil, "", 400},
		{"upper-case slug", "GET", "/projects/PROJ/repos/Secret", nil, "", 400},
		{"bad key", "GET", "/projects/P%20J/repos", nil, "", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, c.method, n.srv.URL+rest.Prefix+c.path, bytesOrNil(c.body))
			check(t, err)
			req.Header.Set(userHeader, "writer")
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			resp, err := n.srv.Client().Do(req)
			check(t, err)
			r := readResponse(t, resp)
			if r.status != c.status || r.message() == "" {
				t.Fatalf("status %d, want %d, with a message; body %s", r.status, c.status, r.body)
			}
		})
	}
	var got pr
	n.do(t, "GET", pr0, "reader", nil).want(t, 200).decode(t, &got)
	var comments page[struct{ Text string }]
	n.do(t, "GET", pr0+"/comments", "reader", nil).want(t, 200).decode(t, &comments)
	if got.Version != 0 || got.Title != "PR 0" || comments.Size != 3 {
		t.Fatalf("a rejected request wrote something: %+v, %d comments", got, comments.Size)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	n, _ := setup(t)
	if m := n.do(t, "GET", "/nothing/here", "", nil).want(t, 404).message(); m == "" {
		t.Fatal("404 without a JSON message")
	}
	r := n.do(t, "DELETE", "/projects/PROJ", "root", nil).want(t, 405)
	if r.message() == "" || r.header.Get("Allow") == "" {
		t.Fatalf("405 answer: %v %s", r.header, r.body)
	}
}

// Reads are served by the cache after the first.
func TestReadsHitTheCache(t *testing.T) {
	n, w := setup(t)
	testkit.Eventually(t, 5*time.Second, "a pull request read to hit the cache", func() bool {
		n.do(t, "GET", prPath(w.prs[1]), "reader", nil).want(t, 200)
		st := n.cache.Stats().Regions
		return st[rest.RegionPullRequests].Hits > 0 && st[rest.RegionRepositories].Hits > 0 && st[rest.RegionUsers].Hits > 0
	})
	testkit.Eventually(t, 5*time.Second, "a list to hit the collection and query regions", func() bool {
		n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests?state=ALL", "reader", nil).want(t, 200)
		n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests", "reader", nil).want(t, 200)
		st := n.cache.Stats().Regions
		return st[rest.RegionRepoPRs].Hits > 0 && st[rest.RegionQueries].Hits > 0
	})
}

// While the database is down, what the cache holds is still served, the
// rest is 503 with Retry-After; when it returns, everything works again
// without a restart.
func TestDatabaseOutage(t *testing.T) {
	n, w := setup(t)
	cached := "/projects/PROJ/repos/open/pull-requests/" + fmt.Sprint(w.open[0])
	testkit.Eventually(t, 5*time.Second, "the public pull request to be cached", func() bool {
		n.do(t, "GET", cached, "", nil).want(t, 200)
		st := n.cache.Stats().Regions
		return st[rest.RegionPullRequests].Hits > 0 && st[rest.RegionRepositories].Hits > 0 && st[rest.RegionUsers].Hits > 0
	})
	n.sw.Off()
	n.do(t, "GET", cached, "", nil).want(t, 200)
	for _, r := range []response{
		n.do(t, "GET", prPath(w.prs[3]), "reader", nil),
		n.do(t, "PUT", prPath(w.prs[3]), "writer", []byte(`{"version": 0, "title": "x"}`)),
		n.do(t, "POST", prPath(w.prs[3])+"/comments", "writer", []byte(`{"text": "x"}`)),
		n.do(t, "GET", "/projects/PROJ/repos/secret/pull-requests?state=DECLINED", "reader", nil),
	} {
		if r.status != 503 || r.header.Get("Retry-After") == "" || r.message() == "" {
			t.Fatalf("with the database down: %d %v %s", r.status, r.header, r.body)
		}
	}
	n.sw.On()
	testkit.Eventually(t, 5*time.Second, "the API to recover", func() bool {
		return n.do(t, "GET", prPath(w.prs[3]), "reader", nil).status == 200
	})
	n.do(t, "PUT", prPath(w.prs[3]), "writer", []byte(`{"version": 0, "title": "after"}`)).want(t, 200)
}

// A comment drops the comment lists of its pull request's bucket only: a
// list of another pull request's comments stays cached. A write that
// bumps the whole table (a push's ChangePullRequests) drops every list of
// the table.
func TestListsOfOtherParentsStayCached(t *testing.T) {
	n, w := setup(t)
	a, b := prPath(w.prs[0])+"/comments", prPath(w.prs[1])+"/comments"
	queries := func() l2cache.RegionStatsSnapshot { return n.cache.Stats().Regions[rest.RegionQueries] }
	testkit.Eventually(t, 5*time.Second, "both comment lists to be cached", func() bool {
		before := queries().Hits
		n.do(t, "GET", a, "reader", nil).want(t, 200)
		n.do(t, "GET", b, "reader", nil).want(t, 200)
		return queries().Hits == before+2
	})
	n.do(t, "POST", a, "writer", []byte(`{"text": "only here"}`)).want(t, 201)
	before := queries()
	n.do(t, "GET", b, "reader", nil).want(t, 200)
	if got := queries(); got.Hits != before.Hits+1 || got.Loads != before.Loads {
		t.Fatalf("another pull request's comment list after a comment: hits %d → %d, loads %d → %d; want a hit",
			before.Hits, got.Hits, before.Loads, got.Loads)
	}
	var p page[struct{ Text string }]
	n.do(t, "GET", a, "reader", nil).want(t, 200).decode(t, &p)
	if p.Size != 4 || p.Values[3].Text != "only here" {
		t.Fatalf("the commented pull request's list %+v", p)
	}

	list := "/projects/PROJ/repos/secret/pull-requests?state=OPEN"
	testkit.Eventually(t, 5*time.Second, "the pull request list to be cached", func() bool {
		before := queries().Hits
		n.do(t, "GET", list, "reader", nil).want(t, 200)
		return queries().Hits == before+1
	})
	check(t, rest.ChangePullRequests(ctx, n.cache, []int64{w.open[0]}, func(context.Context) error { return nil }))
	before = queries()
	n.do(t, "GET", list, "reader", nil).want(t, 200)
	if got := queries(); got.Loads != before.Loads+1 {
		t.Fatalf("a list after a whole-table bump: loads %d → %d; want a load", before.Loads, got.Loads)
	}
}

// A write whose database answer is lost — committed, but answered with an
// error, as when the connection breaks before the answer arrives — still
// invalidates what it may have changed: after it, the lists read through
// the cache show what the database holds. Each list is cached before the
// write; without the invalidation it would be served as it was, for good
// (the chaos checker's "cache differs from the database after settling":
// a comment whose request the client gave up on mid-commit).
func TestWriteWithLostAnswerInvalidates(t *testing.T) {
	n, w := setup(t)
	type item struct {
		ID   int64  `json:"id"`
		Key  string `json:"key"`
		Slug string `json:"slug"`
		Text string `json:"text"`
	}
	for _, c := range []struct {
		name, list, user, method, path, body string
		want                                 func(item) bool
	}{
		{"comment", prPath(w.prs[1]) + "/comments?limit=1000", "writer", "POST", prPath(w.prs[1]) + "/comments", `{"text": "lost answer"}`,
			func(v item) bool { return v.Text == "lost answer" }},
		{"project", "/projects?limit=1000", "root", "POST", "/projects", `{"key": "LOST", "name": "Lost answer"}`,
			func(v item) bool { return v.Key == "LOST" }},
		{"repository", "/projects/ALPHA/repos?limit=1000", "root", "POST", "/projects/ALPHA/repos", `{"name": "lost"}`,
			func(v item) bool { return v.Slug == "lost" }},
		{"pull request", "/projects/PROJ/repos/secret/pull-requests?state=DECLINED&limit=1000", "writer", "PUT", prPath(w.prs[2]), `{"version": 0, "state": "DECLINED"}`,
			func(v item) bool { return v.ID == w.prs[2] }},
	} {
		t.Run(c.name, func(t *testing.T) {
			listed := func() bool {
				var p struct{ Values []item }
				n.do(t, "GET", c.list, c.user, nil).want(t, 200).decode(t, &p)
				return slices.ContainsFunc(p.Values, c.want)
			}
			if listed() || listed() { // the second read is the cache's
				t.Fatalf("%s lists what the write is to add before it", c.list)
			}
			n.sw.LoseNextAnswer()
			if r := n.do(t, c.method, c.path, c.user, []byte(c.body)); r.status < 500 {
				t.Fatalf("the write whose answer was lost: %d %s, want a 5xx", r.status, r.body)
			}
			if !listed() {
				t.Fatalf("%s does not show the write the database committed (its answer lost): the cached list was kept", c.list)
			}
		})
	}
}
