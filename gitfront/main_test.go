package gitfront

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 10*time.Second) }

// fakeUser is an account of fakeAuth.
type fakeUser struct {
	id       int64
	password string
	tokens   map[string]bool // token → revoked
	admin    bool
}

// fakeAuth is an in-memory Authenticator for the tests.
type fakeAuth struct {
	users map[string]fakeUser
	err   error // returned by every call when set (an outage)
}

func (a *fakeAuth) VerifyBasic(_ context.Context, name, secret string) (Principal, error) {
	if a.err != nil {
		return Principal{}, a.err
	}
	u, ok := a.users[name]
	if !ok {
		return Principal{}, ErrBadCredentials
	}
	if revoked, isToken := u.tokens[secret]; secret != u.password && (!isToken || revoked) {
		return Principal{}, ErrBadCredentials
	}
	return Principal{UserID: u.id, Name: name, Admin: u.admin}, nil
}

func (a *fakeAuth) VerifyBearer(_ context.Context, token string) (Principal, error) {
	if a.err != nil {
		return Principal{}, a.err
	}
	for name, u := range a.users {
		if revoked, ok := u.tokens[token]; ok && !revoked {
			return Principal{UserID: u.id, Name: name, Admin: u.admin}, nil
		}
	}
	return Principal{}, ErrBadCredentials
}

// The test accounts. Every secret is listed in testSecrets, which no log
// line may contain.
func testAuth() *fakeAuth {
	return &fakeAuth{users: map[string]fakeUser{
		"alice": {id: 1, password: "alice-pw-S3cret", tokens: map[string]bool{"tok-alice-0123456789": false}},
		"bob":   {id: 2, password: "bob-pw-S3cret"},
		"carol": {id: 3, password: "carol-pw-S3cret", tokens: map[string]bool{"tok-carol-revoked-987": true}},
		"root":  {id: 4, password: "root-pw-S3cret", admin: true},
	}}
}

var testSecrets = []string{"alice-pw-S3cret", "tok-alice-0123456789", "bob-pw-S3cret",
	"carol-pw-S3cret", "tok-carol-revoked-987", "root-pw-S3cret", "wrong-pw-S3cret"}

// fakeRepo is a repository's policy in fakeAuthz.
type fakeRepo struct {
	public           bool
	readers, writers []string
}

// fakeAuthz is the domain's default policy in miniature: public
// repositories are readable by anyone, writers may read, admins may do
// anything; a caller who may not read a repository is told it does not
// exist.
type fakeAuthz struct {
	mu    sync.Mutex
	repos map[string]fakeRepo
}

func (z *fakeAuthz) Authorize(_ context.Context, p Principal, project, repo string, a Action) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	r, ok := z.repos[project+"/"+repo]
	if !ok {
		return ErrNotFound
	}
	write := p.Admin || contains(r.writers, p.Name)
	read := write || r.public || contains(r.readers, p.Name)
	switch {
	case !read:
		return ErrNotFound
	case a == ActionRead || write && a == ActionWrite:
		return nil
	}
	return ErrForbidden
}

func contains(list []string, name string) bool {
	for _, n := range list {
		if n == name {
			return true
		}
	}
	return false
}

func testAuthz() *fakeAuthz {
	return &fakeAuthz{repos: map[string]fakeRepo{
		"proj/pub":  {public: true, writers: []string{"alice"}},
		"proj/priv": {readers: []string{"bob"}, writers: []string{"alice"}},
	}}
}

// capturedLogger logs to a buffer (and to stderr with SHOAL_TEST_LOG).
func capturedLogger() (*slog.Logger, *testkit.SyncBuffer) {
	buf := &testkit.SyncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// assertNoSecrets fails when any test secret appears in the log.
func assertNoSecrets(t *testing.T, log string) {
	t.Helper()
	for _, s := range testSecrets {
		if strings.Contains(log, s) {
			t.Errorf("a secret (%s…) appears in the log:\n%s", s[:4], log)
		}
	}
}

// serve starts f on a loopback test server closed at cleanup.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// testClient is an HTTP client whose idle connections close at cleanup.
func testClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// allowAll is an Authorizer that allows everything.
func allowAll(context.Context, Principal, string, string, Action) error { return nil }
