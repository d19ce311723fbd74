package gitfront

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/internal/httperr"
)

// Principal is the authenticated caller. The zero Principal is anonymous.
type Principal struct {
	UserID int64
	Name   string
	Admin  bool
}

// Anonymous reports whether p is the anonymous caller.
func (p Principal) Anonymous() bool { return p == Principal{} }

// Authenticator checks credentials. Implementations must be safe for
// concurrent use, compare secrets in constant time, and return
// ErrBadCredentials (possibly wrapped) for an unknown user, a wrong
// password, or an unknown, expired or revoked token. Any other error means
// the check could not be made (a database outage) and the front answers
// 503. Errors must not contain the secret: the front logs them.
type Authenticator interface {
	// VerifyBasic checks a username with a password or an access token.
	VerifyBasic(ctx context.Context, username, secret string) (Principal, error)
	// VerifyBearer checks an access token.
	VerifyBearer(ctx context.Context, token string) (Principal, error)
}

// AuthenticatorFuncs adapts two functions to Authenticator; a nil one
// refuses every credential of its kind (ErrBadCredentials).
type AuthenticatorFuncs struct {
	Basic  func(ctx context.Context, username, secret string) (Principal, error)
	Bearer func(ctx context.Context, token string) (Principal, error)
}

// VerifyBasic calls Basic.
func (f AuthenticatorFuncs) VerifyBasic(ctx context.Context, username, secret string) (Principal, error) {
	if f.Basic == nil {
		return Principal{}, ErrBadCredentials
	}
	return f.Basic(ctx, username, secret)
}

// VerifyBearer calls Bearer.
func (f AuthenticatorFuncs) VerifyBearer(ctx context.Context, token string) (Principal, error) {
	if f.Bearer == nil {
		return Principal{}, ErrBadCredentials
	}
	return f.Bearer(ctx, token)
}

// Action is what a caller wants to do with a repository.
type Action uint8

// The actions, each implying the ones before it in a usual policy.
const (
	ActionRead Action = iota + 1
	ActionWrite
	ActionAdmin
)

// String names the action.
func (a Action) String() string {
	switch a {
	case ActionRead:
		return "read"
	case ActionWrite:
		return "write"
	case ActionAdmin:
		return "admin"
	}
	return "unknown"
}

// Authorizer decides whether p (possibly anonymous) may perform a on
// project/repo. It returns nil, ErrForbidden, or ErrNotFound (the
// repository does not exist, or p may not learn that it does); any other
// error is treated as the check being unavailable (503). It must be safe
// for concurrent use. It is asked on every git request, including those
// the pack cache answers.
type Authorizer interface {
	Authorize(ctx context.Context, p Principal, project, repo string, a Action) error
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(ctx context.Context, p Principal, project, repo string, a Action) error

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, p Principal, project, repo string, a Action) error {
	return f(ctx, p, project, repo, a)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p, as Authenticate does.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller that Authenticate established. ok is
// false for an anonymous caller and when no authentication ran; p is then
// the zero (anonymous) Principal.
func PrincipalFrom(ctx context.Context) (p Principal, ok bool) {
	p, _ = ctx.Value(principalKey{}).(Principal)
	return p, !p.Anonymous()
}

// realm is what 401 answers announce, so that git asks its credential
// helper or prompts.
const realm = `Basic realm="shoal"`

// maxSecret bounds usernames, passwords and tokens; longer is malformed.
const maxSecret = 1024

// Authenticate returns middleware that reads the Authorization header:
// no header passes the request on as anonymous (authorization decides);
// Basic (username and password or access token) and Bearer credentials
// are checked by a and the caller is put in the request's context
// (PrincipalFrom). A malformed header or bad credentials get 401 with
// WWW-Authenticate; an Authenticator failure gets 503. Failed logins are
// logged at Warn with the username, never the secret; when the password
// is empty the username is not logged either, since a token pasted as the
// username is common.
func Authenticate(a Authenticator, log *slog.Logger) func(http.Handler) http.Handler {
	return AuthenticateGuarded(a, log, nil)
}

// AuthenticateGuarded is Authenticate with password guessing bounded by
// g (nil: not bounded): a login that g refuses gets 429 with Retry-After
// before its credentials are checked, and each bad credential is
// recorded in g.
func AuthenticateGuarded(a Authenticator, log *slog.Logger, g *LoginGuard) func(http.Handler) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := authenticate(r, a, g)
			if err != nil {
				refuseAuth(w, r, log, err)
				return
			}
			if !p.Anonymous() {
				r = r.WithContext(WithPrincipal(r.Context(), p))
			}
			next.ServeHTTP(w, r)
		})
	}
}

// authFailure describes a refused credential for the log and the client.
type authFailure struct {
	scheme, user string
	status       int
	msg          string
	err          error
	retryAfter   time.Duration // with 429
}

func (f *authFailure) Error() string { return f.msg }
func (f *authFailure) Unwrap() error { return f.err }

func authenticate(r *http.Request, a Authenticator, g *LoginGuard) (Principal, error) {
	h, ok := r.Header["Authorization"]
	if !ok {
		return Principal{}, nil
	}
	if len(h) != 1 {
		return Principal{}, malformed("", "more than one Authorization header")
	}
	scheme, cred, _ := strings.Cut(h[0], " ")
	c := check{a: a, g: g, remote: r.RemoteAddr}
	switch strings.ToLower(scheme) {
	case "basic":
		return c.basic(r.Context(), strings.TrimSpace(cred))
	case "bearer":
		return c.bearer(r.Context(), strings.TrimSpace(cred))
	}
	return Principal{}, malformed("", "unsupported Authorization scheme (use Basic or Bearer)")
}

func malformed(scheme, why string) *authFailure {
	return &authFailure{scheme: scheme, status: http.StatusUnauthorized,
		msg: "malformed Authorization header: " + why, err: ErrBadCredentials}
}

// errNoAnswer stands for the answer of an authenticator that panicked.
var errNoAnswer = errors.New("gitfront: the authenticator did not answer")

// check verifies one request's credentials, within the guard's bounds.
type check struct {
	a      Authenticator
	g      *LoginGuard
	remote string
}

// begin asks the guard whether a login may be checked: done is called
// with the check's outcome; err is the refusal (429) of a login the
// guard stops before its check.
func (c check) begin(scheme, user string) (done func(error), err error) {
	if c.g == nil {
		return func(error) {}, nil
	}
	end, ref, refused := c.g.Begin(user, c.remote)
	if refused {
		return nil, &authFailure{scheme: scheme, user: user, status: http.StatusTooManyRequests, err: ErrThrottled,
			msg: "too many failed logins or login attempts (" + ref.By + "); retry later", retryAfter: ref.RetryAfter}
	}
	return func(err error) { end(errors.Is(err, ErrBadCredentials)) }, nil
}

func (c check) basic(ctx context.Context, cred string) (Principal, error) {
	if cred == "" {
		return Principal{}, malformed("basic", "no credentials after the scheme")
	}
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return Principal{}, malformed("basic", "credentials are not base64")
	}
	user, secret, ok := strings.Cut(string(raw), ":")
	switch {
	case !ok:
		return Principal{}, malformed("basic", "credentials lack the ':' between username and password")
	case user == "" || !utf8.ValidString(user) || len(user) > maxSecret || len(secret) > maxSecret:
		return Principal{}, malformed("basic", "username empty, too long or not UTF-8")
	case secret == "":
		return Principal{}, &authFailure{scheme: "basic", status: http.StatusUnauthorized,
			msg: "password or access token required", err: ErrBadCredentials}
	}
	done, err := c.begin("basic", user)
	if err != nil {
		return Principal{}, err
	}
	var p Principal
	err = errNoAnswer
	defer func() { done(err) }() // also if the authenticator panics
	p, err = c.a.VerifyBasic(ctx, user, secret)
	return checked(p, err, "basic", user)
}

func (c check) bearer(ctx context.Context, token string) (Principal, error) {
	if token == "" || len(token) > maxSecret || strings.ContainsAny(token, " \t") {
		return Principal{}, malformed("bearer", "token empty, too long or containing spaces")
	}
	done, err := c.begin("bearer", "")
	if err != nil {
		return Principal{}, err
	}
	var p Principal
	err = errNoAnswer
	defer func() { done(err) }()
	p, err = c.a.VerifyBearer(ctx, token)
	return checked(p, err, "bearer", "")
}

// checked turns an Authenticator's answer into a principal or a failure.
func checked(p Principal, err error, scheme, user string) (Principal, error) {
	switch {
	case err == nil && p.Anonymous():
		err = errors.New("authenticator accepted credentials without naming a user")
		return Principal{}, &authFailure{scheme, user, http.StatusServiceUnavailable, "authentication unavailable", err, 0}
	case err == nil:
		return p, nil
	case errors.Is(err, ErrBadCredentials):
		return Principal{}, &authFailure{scheme, user, http.StatusUnauthorized, "invalid credentials", err, 0}
	case errors.Is(err, ErrAuthBusy):
		return Principal{}, &authFailure{scheme, user, http.StatusServiceUnavailable, "too many password checks at once; retry later", err, 0}
	}
	return Principal{}, &authFailure{scheme, user, http.StatusServiceUnavailable, "authentication unavailable", err, 0}
}

// refuseAuth logs a failed authentication and answers it.
func refuseAuth(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var f *authFailure
	if !errors.As(err, &f) {
		f = &authFailure{status: http.StatusInternalServerError, msg: "internal error", err: err}
	}
	attrs := []any{"scheme", f.scheme, "remote", r.RemoteAddr, "path", r.URL.Path, "reason", f.msg}
	if f.user != "" {
		attrs = append(attrs, "user", f.user)
	}
	if f.status == http.StatusUnauthorized {
		log.Warn("gitfront: failed login", attrs...)
		w.Header().Set("WWW-Authenticate", realm)
	} else if f.status == http.StatusTooManyRequests {
		setRetryAfter(w, f.retryAfter) // the guard logged the first refusal
	} else if errors.Is(f.err, ErrAuthBusy) {
		log.Warn("gitfront: authentication busy", attrs...)
		setRetryAfter(w, 0)
	} else {
		id := httperr.RequestID(w)
		log.Error("gitfront: authentication unavailable", append(attrs, "request_id", id, "err", f.err)...)
		setRetryAfter(w, 0)
		f.msg += " (request ID " + id + ")"
	}
	writeError(w, r, f.status, f.msg)
}
