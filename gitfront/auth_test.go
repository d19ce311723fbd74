package gitfront

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func basicHeader(user, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+secret))
}

// TestAuthenticate checks every kind of Authorization header: the status,
// the principal the next handler sees, the WWW-Authenticate challenge,
// what the log names, and that no secret is ever logged.
func TestAuthenticate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []string
		fail    error // Authenticator outage
		status  int
		user    string // principal seen downstream; "" is anonymous
		msg     string // in the body
		logs    string // in the log
	}{
		{name: "none", status: 200},
		{name: "password", headers: []string{basicHeader("alice", "alice-pw-S3cret")}, status: 200, user: "alice"},
		{name: "token as password", headers: []string{basicHeader("alice", "tok-alice-0123456789")}, status: 200, user: "alice"},
		{name: "bearer", headers: []string{"Bearer tok-alice-0123456789"}, status: 200, user: "alice"},
		{name: "scheme case", headers: []string{"bAsIc " + strings.TrimPrefix(basicHeader("bob", "bob-pw-S3cret"), "Basic ")}, status: 200, user: "bob"},
		{name: "wrong password", headers: []string{basicHeader("alice", "wrong-pw-S3cret")}, status: 401, msg: "invalid credentials", logs: "user=alice"},
		{name: "unknown user", headers: []string{basicHeader("mallory", "wrong-pw-S3cret")}, status: 401, msg: "invalid credentials", logs: "user=mallory"},
		{name: "revoked token", headers: []string{basicHeader("carol", "tok-carol-revoked-987")}, status: 401, msg: "invalid credentials", logs: "user=carol"},
		{name: "revoked bearer", headers: []string{"Bearer tok-carol-revoked-987"}, status: 401, msg: "invalid credentials", logs: "scheme=bearer"},
		{name: "empty password", headers: []string{basicHeader("tok-alice-0123456789", "")}, status: 401, msg: "password or access token required", logs: "failed login"},
		{name: "not base64", headers: []string{"Basic alice:alice-pw-S3cret"}, status: 401, msg: "not base64", logs: "failed login"},
		{name: "no colon", headers: []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("alice-pw-S3cret"))}, status: 401, msg: "lack the ':'"},
		{name: "empty user", headers: []string{basicHeader("", "alice-pw-S3cret")}, status: 401, msg: "username empty"},
		{name: "bad utf8 user", headers: []string{basicHeader("\xff\xfe", "alice-pw-S3cret")}, status: 401, msg: "not UTF-8"},
		{name: "long secret", headers: []string{basicHeader("alice", strings.Repeat("x", 2000))}, status: 401, msg: "too long"},
		{name: "empty bearer", headers: []string{"Bearer "}, status: 401, msg: "token empty"},
		{name: "bearer with space", headers: []string{"Bearer tok-alice-0123456789 extra"}, status: 401, msg: "containing spaces"},
		{name: "unknown scheme", headers: []string{"Digest username=alice"}, status: 401, msg: "unsupported Authorization scheme"},
		{name: "scheme only", headers: []string{"Basic"}, status: 401, msg: "no credentials"},
		{name: "two headers", headers: []string{basicHeader("alice", "alice-pw-S3cret"), "Bearer tok-alice-0123456789"}, status: 401, msg: "more than one"},
		{name: "outage", headers: []string{basicHeader("alice", "alice-pw-S3cret")}, fail: errors.New("database down"), status: 503, msg: "authentication unavailable", logs: "database down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := capturedLogger()
			auth := testAuth()
			auth.err = tc.fail
			var seen *Principal
			h := Authenticate(auth, logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p, ok := PrincipalFrom(r.Context())
				if ok == p.Anonymous() {
					t.Errorf("PrincipalFrom ok=%v for %+v", ok, p)
				}
				seen = &p
			}))
			r := httptest.NewRequest("GET", "/rest/api/1.0/projects", nil)
			for _, v := range tc.headers {
				r.Header.Add("Authorization", v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			checkAuthOutcome(t, rec, seen, tc.user, tc.msg)
			if !strings.Contains(logs.String(), tc.logs) {
				t.Errorf("log lacks %q:\n%s", tc.logs, logs)
			}
			if tc.name == "empty password" && strings.Contains(logs.String(), "user=") {
				t.Errorf("username logged when the password is empty:\n%s", logs)
			}
			assertNoSecrets(t, logs.String())
		})
	}
}

func checkAuthOutcome(t *testing.T, rec *httptest.ResponseRecorder, seen *Principal, user, msg string) {
	t.Helper()
	if rec.Code == 200 {
		if seen == nil || seen.Name != user {
			t.Fatalf("downstream principal %+v, want %q", seen, user)
		}
		return
	}
	if seen != nil {
		t.Fatalf("refused request reached the handler")
	}
	if !strings.Contains(rec.Body.String(), msg) {
		t.Errorf("body %q lacks %q", rec.Body, msg)
	}
	if got := rec.Header().Get("WWW-Authenticate"); rec.Code == 401 && got != `Basic realm="shoal"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" || !strings.HasPrefix(rec.Body.String(), `{"errors":[{"message":`) {
		t.Errorf("REST error %s %q, want JSON in the REST API's shape", ct, rec.Body)
	}
}

// TestAuthenticateGitErrorsAreText: git shows a text/plain body to the
// user, so errors on git paths are text.
func TestAuthenticateGitErrorsAreText(t *testing.T) {
	logger, _ := capturedLogger()
	h := Authenticate(testAuth(), logger)(http.NotFoundHandler())
	r := httptest.NewRequest("GET", "/scm/proj/priv.git/info/refs?service=git-upload-pack", nil)
	r.Header.Set("Authorization", basicHeader("alice", "wrong-pw-S3cret"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != 401 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func TestAuthenticatorFuncs(t *testing.T) {
	var none AuthenticatorFuncs
	if _, err := none.VerifyBasic(t.Context(), "a", "b"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("nil Basic: %v", err)
	}
	if _, err := none.VerifyBearer(t.Context(), "t"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("nil Bearer: %v", err)
	}
	a := testAuth()
	f := AuthenticatorFuncs{Basic: a.VerifyBasic, Bearer: a.VerifyBearer}
	if p, err := f.VerifyBearer(t.Context(), "tok-alice-0123456789"); err != nil || p.Name != "alice" {
		t.Errorf("Bearer: %+v %v", p, err)
	}
}
