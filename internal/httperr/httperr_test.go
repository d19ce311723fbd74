package httperr

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func body(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var b Body
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || len(b.Errors) != 1 {
		t.Fatalf("not an error body: %q (%v)", w.Body.String(), err)
	}
	return b.Errors[0].Message
}

// A 500's cause goes to the log under the request ID; the client reads
// only the ID, in the body and the header.
func TestInternal(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	w := httptest.NewRecorder()
	Internal(w, httptest.NewRequest("GET", "/x", nil), log, errors.New(`UNIQUE constraint failed: users.name (2067)`))
	id := w.Header().Get(Header)
	msg := body(t, w)
	if w.Code != 500 || id == "" || !strings.Contains(msg, id) || strings.Contains(msg, "UNIQUE") {
		t.Fatalf("%d %q %q", w.Code, id, msg)
	}
	if !strings.Contains(logs.String(), "request_id="+id) || !strings.Contains(logs.String(), "UNIQUE") || !strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("log: %s", logs.String())
	}
	w2 := httptest.NewRecorder()
	if RequestID(w2) == id {
		t.Fatal("two requests, one ID")
	}
}

// The mux's own 404 and 405 come out in the error shape.
func TestNoRoute(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/thing/{id}", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("DELETE /v1/thing/{id}", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/", NoRoute(mux))
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("POST", "/v1/thing/1", nil))
	if w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD, DELETE" || !strings.Contains(body(t, w), "POST") {
		t.Fatalf("%d %v %q", w.Code, w.Header(), w.Body.String())
	}
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/nope", nil))
	if w.Code != 404 || !strings.Contains(body(t, w), "/nope") {
		t.Fatalf("%d %q", w.Code, w.Body.String())
	}
}
