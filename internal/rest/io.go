package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/httperr"
	"github.com/shoal-dev/shoal/l2cache"
)

// errorJSON is the body of every error answer.
type errorJSON struct {
	Errors []errorMessage `json:"errors"`
}

type errorMessage struct {
	Message string `json:"message"`
}

func errorBody(msg string) errorJSON { return errorJSON{Errors: []errorMessage{{Message: msg}}} }

// httpError is an error with the status it answers.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// jsonContentType is shared by every answer: the header map takes it as
// it is (a later Add would copy it, its capacity being 1).
var jsonContentType = []string{"application/json;charset=UTF-8"}

func writeJSON(w http.ResponseWriter, status int, v any) {
	if a, ok := v.(jsonAppender); ok {
		writeAppended(w, status, a)
		return
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// writeAppended writes a value that appends its own JSON, through a
// pooled buffer. It is generic so that a struct is not boxed (copied to
// the heap) on its way to its appendJSON method.
func writeAppended[T jsonAppender](w http.ResponseWriter, status int, v T) {
	w.Header()["Content-Type"] = jsonContentType
	bp := jsonBufs.Get().(*[]byte)
	b := append(v.appendJSON((*bp)[:0]), '\n') // as json.Encoder ends a value
	w.WriteHeader(status)
	w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		jsonBufs.Put(bp)
	}
}

// fail answers err with its status and message. Domain sentinels map to
// 404, 409, 400 and 503; anything unexpected is a logged 500 whose
// message does not leak internals.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := a.classify(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
	}
	var dbe *domain.DBError
	switch {
	case status == http.StatusInternalServerError:
		// The client reads a request ID, the log the cause.
		id := httperr.RequestID(w)
		a.cfg.Logger.Error("rest: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "request_id", id, "err", err)
		msg += " (request ID " + id + ")"
	case status >= 500:
		a.cfg.Logger.Warn("rest: request failed", "method", r.Method, "path", r.URL.Path, "status", status,
			"request_id", httperr.RequestID(w), "err", err)
	case errors.As(err, &dbe):
		// The database's own words (a constraint's name) are for the log.
		a.cfg.Logger.Info("rest: refused by the database", "method", r.Method, "path", r.URL.Path, "status", status,
			"request_id", httperr.RequestID(w), "err", dbe.Cause)
	}
	writeJSON(w, status, errorBody(msg))
}

func (a *api) classify(err error) (int, string) {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.Is(err, domain.ErrNotFound):
		return http.StatusNotFound, messageOf(err, domain.ErrNotFound)
	case errors.Is(err, domain.ErrConflict):
		return http.StatusConflict, messageOf(err, domain.ErrConflict)
	case errors.Is(err, domain.ErrInvalid):
		return http.StatusBadRequest, messageOf(err, domain.ErrInvalid)
	case errors.Is(err, domain.ErrUnavailable), errors.Is(err, l2cache.ErrClosed):
		return http.StatusServiceUnavailable, "the database is unavailable; retry later"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "the request was cancelled or timed out"
	}
	return http.StatusInternalServerError, "internal error"
}

// messageOf is err's text without the "domain: " noise of the sentinel's
// own prefix, which is an implementation detail to a client.
func messageOf(err, sentinel error) string {
	msg := err.Error()
	if msg == sentinel.Error() {
		return msg[len("domain: "):]
	}
	return strings.ReplaceAll(msg, "domain: ", "")
}

// decode reads the request's JSON body into dst, strictly: at most
// MaxBodyBytes (413), Content-Type JSON or absent (415), valid UTF-8,
// one JSON value with no unknown fields and no trailing data (400).
func (a *api) decode(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "the body must be application/json, not %q", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return errorf(http.StatusRequestEntityTooLarge, "the body is larger than %d bytes", a.cfg.MaxBodyBytes)
	case err != nil:
		return errorf(http.StatusBadRequest, "reading the body: %v", err)
	case !utf8.Valid(body):
		return errorf(http.StatusBadRequest, "the body is not valid UTF-8")
	case loneSurrogate(body):
		// encoding/json would store U+FFFD in its place: the client's
		// text would change silently.
		return errorf(http.StatusBadRequest, "the body escapes a lone UTF-16 surrogate, which is not Unicode")
	}
	return decodeJSON(body, dst)
}

// decodeJSON is the strict decoding of one JSON value into dst.
func decodeJSON(body []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return errorf(http.StatusBadRequest, "invalid JSON body: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "invalid JSON body: data after the JSON value")
	}
	return nil
}

// loneSurrogate reports whether a JSON text has a \uXXXX escape of a
// UTF-16 surrogate that is not a high one followed by a low one.
// Backslashes only occur inside strings, so the scan needs no parser.
func loneSurrogate(body []byte) bool {
	for i := 0; i < len(body)-1; i++ {
		if body[i] != '\\' {
			continue
		}
		if body[i+1] != 'u' {
			i++ // a two-character escape, such as \\
			continue
		}
		r := hexRune(body[i+2:])
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		case r >= 0xD800 && r <= 0xDBFF:
			if len(body) < i+12 || body[i+6] != '\\' || body[i+7] != 'u' {
				return true
			}
			if lo := hexRune(body[i+8:]); lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 11
		default:
			i += 5
		}
	}
	return false
}

// hexRune parses the 4 hex digits at the start of b, or returns -1.
func hexRune(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 16)
	if err != nil {
		return -1
	}
	return rune(n)
}

// jsonProblem describes a decoding error for the client.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.As(err, &syn):
		return fmt.Sprintf("%v (at byte %d)", syn, syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %v, not %s", typ.Field, typ.Type, typ.Value)
	}
	return err.Error() // unknown field, unexpected EOF
}

// pageParams parses ?start= and ?limit=.
func (a *api) pageParams(r *http.Request) (start, limit int, err error) {
	q := r.URL.Query()
	start, limit = 0, a.cfg.DefaultLimit
	if s := q.Get("start"); s != "" {
		if start, err = strconv.Atoi(s); err != nil || start < 0 {
			return 0, 0, errorf(http.StatusBadRequest, "start must be a non-negative integer, not %q", s)
		}
	}
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 {
			return 0, 0, errorf(http.StatusBadRequest, "limit must be a positive integer, not %q", s)
		}
	}
	return start, min(limit, a.cfg.MaxLimit), nil
}

// pathID parses a positive int64 path value s, the segment name.
func pathID(name, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || s[0] == '+' {
		return 0, errorf(http.StatusBadRequest, "%s must be a positive integer, not %q", name, s)
	}
	return id, nil
}

// pathKey returns the project key from the path, validated.
func pathKey(p pathParams) (string, error) {
	key := p.key
	if !domain.ValidProjectKey(key) {
		return "", errorf(http.StatusBadRequest, "invalid project key %q", key)
	}
	return key, nil
}

// pathRepo returns the project key and repository slug from the path,
// validated (no traversal, no odd characters).
func pathRepo(p pathParams) (string, string, error) {
	key, err := pathKey(p)
	if err != nil {
		return "", "", err
	}
	slug := p.slug
	if !domain.ValidSlug(slug) {
		return "", "", errorf(http.StatusBadRequest, "invalid repository slug %q", slug)
	}
	return key, slug, nil
}

// paged is Bitbucket's page of results.
type paged[T any] struct {
	Size          int  `json:"size"`
	Limit         int  `json:"limit"`
	IsLastPage    bool `json:"isLastPage"`
	Values        []T  `json:"values"`
	Start         int  `json:"start"`
	NextPageStart *int `json:"nextPageStart,omitempty"`
}

func newPage[T any](values []T, start, limit int, more bool) paged[T] {
	p := paged[T]{Size: len(values), Limit: limit, IsLastPage: !more, Values: values, Start: start}
	if values == nil {
		p.Values = []T{}
	}
	if more {
		next := start + limit
		p.NextPageStart = &next
	}
	return p
}

// window cuts ids[start:start+limit] and says whether more follow.
func window[T any](ids []T, start, limit int) ([]T, bool) {
	if start >= len(ids) {
		return nil, false
	}
	end := min(start+limit, len(ids))
	return ids[start:end], end < len(ids)
}
