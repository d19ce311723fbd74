// Package httperr writes the one error body every JSON answer of a node
// has — Bitbucket's {"errors":[{"message":…}]} — and gives an error
// answer the request ID under which its cause is logged.
//
// What a client reads is a message meant for it: a failure inside the
// node (an unexpected error, a database's own text) is logged with a
// request ID, and the client gets "internal error" with that ID, in the
// body and in the X-Request-Id header, to quote when it reports it.
package httperr

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
)

// Header carries the request ID of an error answer.
const Header = "X-Request-Id"

// Message is one error.
type Message struct {
	Message string `json:"message"`
}

// Body is the error body.
type Body struct {
	Errors []Message `json:"errors"`
}

// Of is the body of one message.
func Of(msg string) Body { return Body{Errors: []Message{{Message: msg}}} }

// Write answers status with the body of msg, as JSON.
func Write(w http.ResponseWriter, status int, msg string) {
	WriteBody(w, status, Of(msg))
}

// WriteBody answers status with v as JSON (an error body, possibly with
// more fields beside "errors").
func WriteBody(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var (
	prefix = func() string {
		var b [4]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:]) + "-"
	}()
	counter atomic.Uint64
)

// RequestID is the ID of the request that w answers: the X-Request-Id
// header w already carries, or a new one (unique in this process, and
// across processes with high probability), set on w. Call it before the
// answer's header is written.
func RequestID(w http.ResponseWriter) string {
	if id := w.Header().Get(Header); id != "" {
		return id
	}
	id := prefix + strconv.FormatUint(counter.Add(1), 36)
	w.Header().Set(Header, id)
	return id
}

// Internal answers 500 for err, which the client must not read: err is
// logged at Error with the request's method, path and ID, and the client
// gets "internal error" with the ID.
func Internal(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	Logged(w, r, log, http.StatusInternalServerError, "internal error", err)
}

// Logged answers status with msg and the request ID, and logs err (the
// cause the client is not told) with the same ID: at Error for a 5xx, at
// Info otherwise.
func Logged(w http.ResponseWriter, r *http.Request, log *slog.Logger, status int, msg string, err error) {
	if log == nil {
		log = slog.Default()
	}
	id := RequestID(w)
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status,
		"request_id", id, "err", err)
	Write(w, status, msg+" (request ID "+id+")")
}

// NoRoute is the handler to mount at "/" on mux (as its catch-all) so
// that what mux would answer itself, as plain text, is answered in the
// error shape: 405 with Allow for a path that mux serves with other
// methods, 404 otherwise.
func NoRoute(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			if m == r.Method {
				continue
			}
			probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			Write(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
			return
		}
		Write(w, http.StatusNotFound, "no such resource: "+r.URL.Path)
	}
}
