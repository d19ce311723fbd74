package rest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

var ctx = context.Background()

// userHeader names the caller in tests (no authentication middleware).
const userHeader = "X-Test-User"

// node is one shoal node's REST API over a store and a cache.
type node struct {
	store *domain.Store
	sw    *domaintest.Switch
	cache *l2cache.Cache
	srv   *httptest.Server
	hooks atomic.Int64
	// branches is each created repository's default branch as the hook
	// received it ("PROJ/slug" → branch).
	branches sync.Map
	users    map[string]int64
}

// world is the shared database content the tests use.
type world struct {
	users map[string]int64 // root (admin), owner, writer, reader, stranger
	prs   []int64          // in PROJ/secret, oldest first
	open  []int64          // in PROJ/open
}

func newLocalCache(t testing.TB, cfg l2cache.Config) *l2cache.Cache {
	t.Helper()
	cfg.Logger = testkit.Logger(t)
	c, err := l2cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// startNode serves the API over the SQLite file at path with cache (nil:
// no cache).
func startNode(t testing.TB, path string, cache *l2cache.Cache, w *world) *node {
	t.Helper()
	return startNodeWith(t, path, cache, w, nil)
}

// startNodeWith is startNode with the API's configuration changed by
// tweak (nil: none).
func startNodeWith(t testing.TB, path string, cache *l2cache.Cache, w *world, tweak func(*rest.Config)) *node {
	t.Helper()
	store, sw := domaintest.Open(t, path, domaintest.Config(t))
	n := &node{store: store, sw: sw, cache: cache, users: w.users}
	cfg := rest.Config{DB: store, Cache: cache, Logger: testkit.Logger(t),
		Principal: func(r *http.Request) (int64, bool) {
			id, ok := n.users[r.Header.Get(userHeader)]
			return id, ok
		},
		OnRepositoryCreated: func(ctx context.Context, project, slug, branch string) error {
			n.hooks.Add(1)
			n.branches.Store(project+"/"+slug, branch)
			if slug == "hook-fails" {
				return fmt.Errorf("disk full")
			}
			return nil
		},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	h, err := rest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.srv = httptest.NewServer(h)
	t.Cleanup(n.srv.Close)
	return n
}

// seedWorld fills the database at path: a project PROJ with a private
// repository "secret" (7 pull requests, the first with 3 comments) and a
// public one "open" (2 pull requests), and users with grants.
func seedWorld(t testing.TB, path string) *world {
	t.Helper()
	s, _ := domaintest.Open(t, path, domaintest.Config(t))
	w := &world{users: map[string]int64{}}
	for _, u := range []struct {
		name  string
		admin bool
	}{{"root", true}, {"owner", false}, {"writer", false}, {"reader", false}, {"stranger", false}} {
		usr, err := s.CreateUser(ctx, domain.NewUser{Name: u.name, DisplayName: strings.ToUpper(u.name), Email: u.name + "@example.com", Admin: u.admin})
		check(t, err)
		w.users[u.name] = usr.ID
	}
	for _, k := range []string{"PROJ", "ALPHA", "BETA"} {
		_, err := s.CreateProject(ctx, domain.Project{Key: k, Name: "Project " + k})
		check(t, err)
	}
	secret, err := s.CreateRepository(ctx, "PROJ", domain.NewRepository{Name: "secret"})
	check(t, err)
	open, err := s.CreateRepository(ctx, "PROJ", domain.NewRepository{Name: "open", Public: true})
	check(t, err)
	check(t, s.Grant(ctx, w.users["owner"], "PROJ", "", domain.PermAdmin))
	check(t, s.Grant(ctx, w.users["writer"], "PROJ", "secret", domain.PermWrite))
	check(t, s.Grant(ctx, w.users["writer"], "PROJ", "open", domain.PermWrite))
	check(t, s.Grant(ctx, w.users["reader"], "PROJ", "secret", domain.PermRead))
	w.prs = createPRs(t, s, secret.ID, w.users["writer"], 7)
	w.open = createPRs(t, s, open.ID, w.users["writer"], 2)
	for i := 0; i < 3; i++ {
		_, err := s.CreateComment(ctx, w.prs[0], w.users["reader"], fmt.Sprintf("comment %d", i))
		check(t, err)
	}
	return w
}

func createPRs(t testing.TB, s *domain.Store, repoID, author int64, n int) []int64 {
	var ids []int64
	for i := 0; i < n; i++ {
		pr, err := s.CreatePullRequest(ctx, domain.NewPullRequest{RepositoryID: repoID, Title: fmt.Sprintf("PR %d", i),
			FromBranch: fmt.Sprintf("feature/%d", i), ToBranch: "main", AuthorID: author})
		check(t, err)
		ids = append(ids, pr.ID)
	}
	return ids
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// setup is one node with a LOCAL cache over a fresh seeded database.
func setup(t *testing.T) (*node, *world) {
	path := domaintest.Path(t)
	w := seedWorld(t, path)
	return startNode(t, path, newLocalCache(t, l2cache.Config{}), w), w
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// message is the error message of a JSON error answer, or "".
func (r response) message() string {
	var e struct {
		Errors []struct{ Message string } `json:"errors"`
	}
	if json.Unmarshal(r.body, &e) != nil || len(e.Errors) != 1 {
		return ""
	}
	return e.Errors[0].Message
}

// do sends a request as user ("" for anonymous) with body (nil: none).
func (n *node) do(t testing.TB, method, path, user string, body []byte) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.srv.URL+rest.Prefix+path, rd)
	check(t, err)
	if user != "" {
		req.Header.Set(userHeader, user)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.srv.Client().Do(req)
	check(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	check(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// want fails unless the status is as expected.
func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

// pr is the part of a pull request's JSON the tests read.
type pr struct {
	ID          int64  `json:"id"`
	Version     int64  `json:"version"`
	Title       string `json:"title"`
	Description string `json:"description"`
	State       string `json:"state"`
	Author      struct {
		User struct {
			Name string `json:"name"`
		} `json:"user"`
	} `json:"author"`
}

// page is a paged answer.
type page[T any] struct {
	Size          int  `json:"size"`
	Limit         int  `json:"limit"`
	Start         int  `json:"start"`
	IsLastPage    bool `json:"isLastPage"`
	NextPageStart *int `json:"nextPageStart"`
	Values        []T  `json:"values"`
}

func prPath(id int64) string { return fmt.Sprintf("/projects/PROJ/repos/secret/pull-requests/%d", id) }

func jsonBody(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func bytesOrNil(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

func readResponse(t testing.TB, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	check(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}
