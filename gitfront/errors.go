package gitfront

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/httperr"
)

// Sentinel errors. Methods list the ones they return; match with errors.Is.
var (
	// ErrForbidden is an Authorizer's answer when the caller is known but
	// may not perform the action.
	ErrForbidden = errors.New("gitfront: forbidden")
	// ErrNotFound is an Authorizer's answer when the repository does not
	// exist or the caller may not know that it does; also returned when a
	// repository is missing on disk.
	ErrNotFound = errors.New("gitfront: not found")
	// ErrBadCredentials is an Authenticator's answer for an unknown user,
	// a wrong password, or an unknown, expired or revoked token.
	ErrBadCredentials = errors.New("gitfront: bad credentials")
	// ErrAuthBusy is an Authenticator's answer when it cannot check a
	// password now (its bcrypt slots and queue are full): 503 with
	// Retry-After, logged at Warn.
	ErrAuthBusy = errors.New("gitfront: authentication busy")
	// ErrThrottled: a login refused (429) before its check because of
	// earlier failed logins (LoginLimits).
	ErrThrottled = errors.New("gitfront: too many failed logins")
	// ErrPoolFull: every slot of the pool is busy and its queue is full.
	ErrPoolFull = errors.New("gitfront: pool full")
	// ErrQueueTimeout: the request waited in the pool's queue longer than
	// the pool's QueueTimeout.
	ErrQueueTimeout = errors.New("gitfront: queue wait timed out")
	// ErrDraining: the front is draining and takes no new requests.
	ErrDraining = errors.New("gitfront: draining")
	// ErrBadName: a project or repository name breaks the naming rules.
	ErrBadName = errors.New("gitfront: bad name")
	// ErrExists: InitBare found the repository already there.
	ErrExists = errors.New("gitfront: repository exists")
	// ErrConfig: a Config or GitConfig is unusable.
	ErrConfig = errors.New("gitfront: bad config")
	// ErrMalformed: a request body is not what the protocol allows (bad
	// pkt-line framing, bad gzip, cut off mid-request).
	ErrMalformed = errors.New("gitfront: malformed request")
	// ErrTooLarge: a request body is larger than the configured limit.
	ErrTooLarge = errors.New("gitfront: request too large")
)

// httpError is an error with the status and message the client sees.
type httpError struct {
	status int
	msg    string
	err    error
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Unwrap() error { return e.err }

func newHTTPError(status int, err error, msg string) *httpError {
	return &httpError{status: status, msg: msg, err: err}
}

// statusOf maps an error to an HTTP status and a message for the client.
func statusOf(err error) (int, string) {
	var he *httpError
	if errors.As(err, &he) {
		return he.status, he.msg
	}
	switch {
	case errors.Is(err, ErrMalformed):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrSlowBody):
		return http.StatusRequestTimeout, "the request body arrived too slowly"
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, ErrBadName):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, "repository not found"
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, "forbidden"
	}
	return http.StatusInternalServerError, "internal error"
}

// writeError answers with status and msg: plain text for git clients
// (which show a text/plain body to the user); JSON otherwise, in the one
// shape of every node's answer, Bitbucket's ({"errors":[{"message":
// msg}]}).
func writeError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if wantsText(r) {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(msg + "\n"))
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(httperr.Of(msg))
}

// wantsText reports whether errors for r are written as text: git paths
// and git clients.
func wantsText(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, scmPrefix) || isGitAgent(r)
}

// setRetryAfter sets Retry-After in whole seconds, at least 1.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	s := int64((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(max(s, 1), 10))
}
