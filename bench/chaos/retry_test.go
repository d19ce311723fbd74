package chaos

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetryIdempotent(t *testing.T) {
	var calls atomic.Int32
	// Fails twice (a 503, then a request that outlasts the client's
	// timeout), then answers.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			http.Error(w, "raft: not yet", http.StatusServiceUnavailable)
		case 2:
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	c := &http.Client{Timeout: 200 * time.Millisecond}
	do := func(ctx context.Context) (int, []byte, error) {
		return doReq(ctx, c, http.MethodPut, srv.URL, []byte("{}"), false)
	}
	if err := retryIdempotent(context.Background(), time.Minute, do); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
}

func TestRetryIdempotentStops(t *testing.T) {
	var calls atomic.Int32
	var code atomic.Int32
	code.Store(http.StatusBadRequest)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "bad job", int(code.Load()))
	}))
	defer srv.Close()
	do := func(ctx context.Context) (int, []byte, error) {
		return doReq(ctx, srv.Client(), http.MethodPut, srv.URL, nil, false)
	}
	// A 4xx is not asked again.
	err := retryIdempotent(context.Background(), time.Minute, do)
	if err == nil || !strings.Contains(err.Error(), "400 bad job") || calls.Load() != 1 {
		t.Fatalf("400: err %v after %d calls, want one call and its answer", err, calls.Load())
	}
	// A 5xx is asked again until the bound, and the error says so.
	code.Store(http.StatusInternalServerError)
	calls.Store(0)
	err = retryIdempotent(context.Background(), 600*time.Millisecond, do)
	if err == nil || !strings.Contains(err.Error(), "gave up after") || calls.Load() < 2 {
		t.Fatalf("500: err %v after %d calls, want retries and a give-up", err, calls.Load())
	}
}
