package domain_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
)

func init() {
	register("users-and-auth", testUsersAndAuth)
	register("permissions", testPermissions)
	register("repositories", testRepositories)
	register("pull-requests", testPullRequests)
	register("comments", testComments)
	register("seed", testSeed)
}

var ctx = context.Background()

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantErr(t *testing.T, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("got error %v, want %v", err, sentinel)
	}
}

func testUsersAndAuth(t *testing.T, s *domain.Store) {
	alice := must[domain.User](t)(s.CreateUser(ctx, domain.NewUser{Name: "alice", Email: "alice@example.com", Password: "s3cret"}))
	bob := must[domain.User](t)(s.CreateUser(ctx, domain.NewUser{Name: "bob", Password: "hunter2"}))
	if alice.DisplayName != "alice" || alice.Admin || alice.ID == 0 {
		t.Fatalf("alice = %+v", alice)
	}
	_, err := s.CreateUser(ctx, domain.NewUser{Name: "alice"})
	wantErr(t, err, domain.ErrConflict)
	for _, bad := range []domain.NewUser{{Name: ""}, {Name: "../x"}, {Name: "a", Email: "not an address"}, {Name: "a", Password: strings.Repeat("x", 73)}} {
		_, err := s.CreateUser(ctx, bad)
		wantErr(t, err, domain.ErrInvalid)
	}
	if u, err := s.VerifyPassword(ctx, "alice", "s3cret"); err != nil || u.ID != alice.ID {
		t.Fatalf("VerifyPassword = %+v, %v", u, err)
	}
	for _, c := range [][2]string{{"alice", "wrong"}, {"alice", ""}, {"nobody", "s3cret"}, {"bob", "s3cret"}} {
		_, err := s.VerifyPassword(ctx, c[0], c[1])
		wantErr(t, err, domain.ErrBadCredentials)
	}
	tok := must[string](t)(s.CreateToken(ctx, alice.ID, "ci"))
	if !strings.HasPrefix(tok, domain.TokenPrefix) {
		t.Fatalf("token %q", tok)
	}
	_, err = s.CreateToken(ctx, alice.ID, "ci")
	wantErr(t, err, domain.ErrConflict)
	_, err = s.CreateToken(ctx, 9999, "ci")
	wantErr(t, err, domain.ErrNotFound)
	if u, err := s.VerifyToken(ctx, tok); err != nil || u.ID != alice.ID {
		t.Fatalf("VerifyToken = %+v, %v", u, err)
	}
	if u, err := s.VerifyPassword(ctx, "alice", tok); err != nil || u.ID != alice.ID {
		t.Fatalf("VerifyPassword with a token = %+v, %v", u, err)
	}
	_, err = s.VerifyPassword(ctx, "bob", tok) // alice's token is not bob's
	wantErr(t, err, domain.ErrBadCredentials)
	_, err = s.VerifyToken(ctx, tok+"x")
	wantErr(t, err, domain.ErrBadCredentials)
	if err := s.RevokeToken(ctx, alice.ID, "ci"); err != nil {
		t.Fatal(err)
	}
	_, err = s.VerifyToken(ctx, tok)
	wantErr(t, err, domain.ErrBadCredentials)
	wantErr(t, s.RevokeToken(ctx, alice.ID, "ci"), domain.ErrNotFound)
	// A changed password is not served from the verification cache.
	if err := s.SetPassword(ctx, bob.ID, "new-one"); err != nil {
		t.Fatal(err)
	}
	_, err = s.VerifyPassword(ctx, "bob", "hunter2")
	wantErr(t, err, domain.ErrBadCredentials)
	must[domain.User](t)(s.VerifyPassword(ctx, "bob", "new-one"))
}

// fixture is a project with a private and a public repository and users
// with various grants.
type fixture struct {
	admin, owner, writer, reader, stranger domain.User
	proj                                   domain.Project
	private, public                        domain.Repository
}

func newFixture(t *testing.T, s *domain.Store) fixture {
	var f fixture
	user := func(name string, admin bool) domain.User {
		return must[domain.User](t)(s.CreateUser(ctx, domain.NewUser{Name: name, Password: "pw-" + name, Admin: admin}))
	}
	f.admin, f.owner, f.writer, f.reader, f.stranger = user("root", true), user("owner", false), user("writer", false), user("reader", false), user("stranger", false)
	f.proj = must[domain.Project](t)(s.CreateProject(ctx, domain.Project{Key: "PROJ", Name: "Project"}))
	f.private = must[domain.Repository](t)(s.CreateRepository(ctx, "PROJ", domain.NewRepository{Name: "Secret Sauce"}))
	f.public = must[domain.Repository](t)(s.CreateRepository(ctx, "PROJ", domain.NewRepository{Name: "open", Public: true}))
	for _, g := range []struct {
		u    domain.User
		repo string
		p    domain.Perm
	}{{f.owner, "", domain.PermAdmin}, {f.writer, "secret-sauce", domain.PermWrite}, {f.reader, "", domain.PermRead}} {
		if err := s.Grant(ctx, g.u.ID, "PROJ", g.repo, g.p); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func testPermissions(t *testing.T, s *domain.Store) {
	f := newFixture(t, s)
	for _, c := range []struct {
		user int64
		repo string
		want domain.Perm
	}{
		{f.admin.ID, "secret-sauce", domain.PermAdmin}, {f.admin.ID, "", domain.PermAdmin},
		{f.owner.ID, "secret-sauce", domain.PermAdmin}, {f.owner.ID, "", domain.PermAdmin},
		{f.writer.ID, "secret-sauce", domain.PermWrite}, {f.writer.ID, "open", domain.PermRead}, {f.writer.ID, "", domain.PermNone},
		{f.reader.ID, "secret-sauce", domain.PermRead}, {f.reader.ID, "", domain.PermRead},
		{f.stranger.ID, "secret-sauce", domain.PermNone}, {f.stranger.ID, "open", domain.PermRead},
		{0, "secret-sauce", domain.PermNone}, {0, "open", domain.PermRead}, {0, "", domain.PermNone},
	} {
		got, err := s.Permission(ctx, c.user, "PROJ", c.repo)
		if err != nil || got != c.want {
			t.Errorf("Permission(user %d, PROJ/%s) = %v, %v; want %v", c.user, c.repo, got, err, c.want)
		}
	}
	_, err := s.Permission(ctx, f.admin.ID, "PROJ", "nope")
	wantErr(t, err, domain.ErrNotFound)
	_, err = s.Permission(ctx, f.admin.ID, "NOPE", "")
	wantErr(t, err, domain.ErrNotFound)
	// Revoking and downgrading.
	if err := s.Grant(ctx, f.writer.ID, "PROJ", "secret-sauce", domain.PermNone); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Permission(ctx, f.writer.ID, "PROJ", "secret-sauce"); p != domain.PermNone {
		t.Fatalf("after revoking, writer has %v", p)
	}
	wantErr(t, s.Grant(ctx, f.writer.ID, "PROJ", "nope", domain.PermRead), domain.ErrNotFound)
}

func testRepositories(t *testing.T, s *domain.Store) {
	must[domain.Project](t)(s.CreateProject(ctx, domain.Project{Key: "WEB", Name: "Web"}))
	_, err := s.CreateProject(ctx, domain.Project{Key: "WEB", Name: "Again"})
	wantErr(t, err, domain.ErrConflict)
	_, err = s.CreateProject(ctx, domain.Project{Key: "1X", Name: "Bad key"})
	wantErr(t, err, domain.ErrInvalid)
	r := must[domain.Repository](t)(s.CreateRepository(ctx, "WEB", domain.NewRepository{Name: "My Web App!"}))
	if r.Slug != "my-web-app" || r.ProjectKey != "WEB" || r.Public {
		t.Fatalf("repository = %+v", r)
	}
	_, err = s.CreateRepository(ctx, "WEB", domain.NewRepository{Name: "my web app"})
	wantErr(t, err, domain.ErrConflict)
	_, err = s.CreateRepository(ctx, "NOPE", domain.NewRepository{Name: "x"})
	wantErr(t, err, domain.ErrNotFound)
	for _, slug := range []string{"../etc", "a/b", ".hidden", "UPPER", "a..b", "x.git", "x.lock", "-x", strings.Repeat("a", 129)} {
		_, err = s.CreateRepository(ctx, "WEB", domain.NewRepository{Name: "x", Slug: slug})
		wantErr(t, err, domain.ErrInvalid)
	}
	for _, n := range []string{"b", "c", "d"} {
		must[domain.Repository](t)(s.CreateRepository(ctx, "WEB", domain.NewRepository{Name: n}))
	}
	page := must[[]string](t)(s.RepositorySlugs(ctx, "WEB", 1, 2))
	if fmt.Sprint(page) != "[c d]" {
		t.Fatalf("page = %v", page)
	}
	got := must[domain.Repository](t)(s.Repository(ctx, "WEB", "my-web-app"))
	if got != r {
		t.Fatalf("Repository = %+v, want %+v", got, r)
	}
	if err := s.DeleteRepository(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Repository(ctx, "WEB", "my-web-app")
	wantErr(t, err, domain.ErrNotFound)
}

func testPullRequests(t *testing.T, s *domain.Store) {
	f := newFixture(t, s)
	pr := must[domain.PullRequest](t)(s.CreatePullRequest(ctx, domain.NewPullRequest{RepositoryID: f.private.ID,
		Title: "Fix it", FromBranch: "feature/x", ToBranch: "main", AuthorID: f.writer.ID}))
	if pr.State != domain.StateOpen || pr.Version != 0 {
		t.Fatalf("new pull request = %+v", pr)
	}
	title, merged := "Fix it properly", domain.StateMerged
	up := must[domain.PullRequest](t)(s.UpdatePullRequest(ctx, pr.ID, domain.PullRequestUpdate{Version: 0, Title: &title}))
	if up.Version != 1 || up.Title != title || up.Description != "" {
		t.Fatalf("updated = %+v", up)
	}
	_, err := s.UpdatePullRequest(ctx, pr.ID, domain.PullRequestUpdate{Version: 0, Title: &title})
	wantErr(t, err, domain.ErrConflict)
	must[domain.PullRequest](t)(s.UpdatePullRequest(ctx, pr.ID, domain.PullRequestUpdate{Version: 1, State: &merged}))
	open := domain.StateOpen
	_, err = s.UpdatePullRequest(ctx, pr.ID, domain.PullRequestUpdate{Version: 2, State: &open})
	wantErr(t, err, domain.ErrConflict)
	bad := domain.State("LOST")
	_, err = s.UpdatePullRequest(ctx, pr.ID, domain.PullRequestUpdate{Version: 2, State: &bad})
	wantErr(t, err, domain.ErrInvalid)
	_, err = s.UpdatePullRequest(ctx, 9999, domain.PullRequestUpdate{Title: &title})
	wantErr(t, err, domain.ErrNotFound)
	_, err = s.PullRequest(ctx, 9999)
	wantErr(t, err, domain.ErrNotFound)
	second := must[domain.PullRequest](t)(s.CreatePullRequest(ctx, domain.NewPullRequest{RepositoryID: f.private.ID,
		Title: "Second", FromBranch: "b", ToBranch: "main", AuthorID: f.writer.ID}))
	if ids := must[[]int64](t)(s.PullRequestIDs(ctx, f.private.ID)); fmt.Sprint(ids) != fmt.Sprint([]int64{second.ID, pr.ID}) {
		t.Fatalf("PullRequestIDs = %v", ids)
	}
	if ids := must[[]int64](t)(s.PullRequestIDsByState(ctx, f.private.ID, domain.StateOpen, 0, 10)); fmt.Sprint(ids) != fmt.Sprint([]int64{second.ID}) {
		t.Fatalf("open IDs = %v", ids)
	}
	_, err = s.CreatePullRequest(ctx, domain.NewPullRequest{RepositoryID: 9999, Title: "x", FromBranch: "a", ToBranch: "b", AuthorID: f.writer.ID})
	wantErr(t, err, domain.ErrInvalid)
}

// Concurrent updates at the same version: exactly one wins.
func TestConcurrentUpdateOneWins(t *testing.T) {
	path := domaintest.Path(t)
	a, _ := domaintest.Open(t, path, domaintest.Config(t))
	b, _ := domaintest.Open(t, path, domaintest.Config(t)) // another node on the same file
	f := newFixture(t, a)
	pr := must[domain.PullRequest](t)(a.CreatePullRequest(ctx, domain.NewPullRequest{RepositoryID: f.public.ID,
		Title: "race", FromBranch: "a", ToBranch: "main", AuthorID: f.owner.ID}))
	for round := int64(0); round < 20; round++ {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, s := range []*domain.Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				title := fmt.Sprintf("by %d in round %d", i, round)
				_, errs[i] = s.UpdatePullRequest(ctx, pr.ID, domain.PullRequestUpdate{Version: round, Title: &title})
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, domain.ErrConflict):
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d updates won (%v)", round, won, errs)
		}
	}
}

func testComments(t *testing.T, s *domain.Store) {
	f := newFixture(t, s)
	pr := must[domain.PullRequest](t)(s.CreatePullRequest(ctx, domain.NewPullRequest{RepositoryID: f.public.ID,
		Title: "t", FromBranch: "a", ToBranch: "main", AuthorID: f.owner.ID}))
	for i := 0; i < 5; i++ {
		must[domain.Comment](t)(s.CreateComment(ctx, pr.ID, f.reader.ID, fmt.Sprintf("comment %d", i)))
	}
	page := must[[]domain.Comment](t)(s.Comments(ctx, pr.ID, 3, 10))
	if len(page) != 2 || page[0].Text != "comment 3" || page[1].AuthorID != f.reader.ID {
		t.Fatalf("page = %+v", page)
	}
	_, err := s.CreateComment(ctx, 9999, f.reader.ID, "x")
	wantErr(t, err, domain.ErrNotFound)
	_, err = s.CreateComment(ctx, pr.ID, f.reader.ID, "  ")
	wantErr(t, err, domain.ErrInvalid)
	_, err = s.CreateComment(ctx, pr.ID, f.reader.ID, "bad \xff utf-8")
	wantErr(t, err, domain.ErrInvalid)
	_, err = s.CreateComment(ctx, pr.ID, 9999, "unknown author")
	wantErr(t, err, domain.ErrInvalid)
}

// seedConfig is a small data set.
var seedConfig = domain.SeedConfig{Users: 30, Projects: 3, ReposPerProject: 4, PRsPerRepo: 10, CommentsPerPR: 3,
	Seed: 7, AdminPassword: "admin-pw", UserPassword: "user-pw"}

func testSeed(t *testing.T, s *domain.Store) {
	res := must[domain.SeedResult](t)(domain.Seed(ctx, s, seedConfig))
	if res.PullRequests != 120 || res.Comments != 360 || res.Repositories != 12 || !res.Admin.Admin {
		t.Fatalf("result = %+v", res)
	}
	must[domain.User](t)(s.VerifyPassword(ctx, "admin", "admin-pw"))
	_, err := domain.Seed(ctx, s, seedConfig)
	wantErr(t, err, domain.ErrConflict)
	// Sequences continue after the seeded ids.
	must[domain.Project](t)(s.CreateProject(ctx, domain.Project{Key: "AFTER", Name: "After"}))
	must[domain.User](t)(s.CreateUser(ctx, domain.NewUser{Name: "after"}))
}

// The same seed gives the same data set, on separate databases.
func TestSeedDeterministic(t *testing.T) {
	dump := func() string {
		s, _ := domaintest.Open(t, domaintest.Path(t), domaintest.Config(t))
		must[domain.SeedResult](t)(domain.Seed(ctx, s, seedConfig))
		var b strings.Builder
		for _, q := range []string{
			"SELECT id || name || display_name || email || admin || created FROM users ORDER BY id",
			"SELECT id || project_key || name FROM projects ORDER BY id",
			"SELECT id || slug || public || last_modified FROM repositories ORDER BY id",
			"SELECT id || repository_id || title || state || from_branch || to_branch || author_id || version || updated FROM pull_requests ORDER BY id",
			"SELECT id || pull_request_id || author_id || text || created FROM comments ORDER BY id",
			"SELECT project_id || user_id || perm FROM project_permissions ORDER BY project_id, user_id",
		} {
			rows := must[[]string](t)(queryStrings(s, q))
			b.WriteString(strings.Join(rows, "\n"))
		}
		return b.String()
	}
	if a, b := dump(), dump(); a != b || len(a) < 1000 {
		t.Fatalf("two seeds of the same config differ (or are empty: %d bytes)", len(a))
	}
}

func queryStrings(s *domain.Store, q string) ([]string, error) {
	rows, err := s.DB().QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Seeding 10,000 pull requests with 30,000 comments takes seconds.
func TestSeedTenThousandPRs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	s, _ := domaintest.Open(t, domaintest.Path(t), domaintest.Config(t))
	seedTenThousand(t, s)
}

func seedTenThousand(t *testing.T, s *domain.Store) {
	start := time.Now()
	res := must[domain.SeedResult](t)(domain.Seed(ctx, s, domain.SeedConfig{Users: 500, Projects: 10, ReposPerProject: 10,
		PRsPerRepo: 100, CommentsPerPR: 3, Seed: 1}))
	took := time.Since(start)
	t.Logf("seeded %d pull requests and %d comments in %v", res.PullRequests, res.Comments, took)
	if res.PullRequests != 10_000 || took > 60*time.Second {
		t.Fatalf("seeded %d pull requests in %v", res.PullRequests, took)
	}
}
