package modeswitch

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/l2cache"
)

// fakeMode is a node's /v1/cache/mode as the client sees it: the record,
// moved on by the test, and a PUT behaviour per attempt.
type fakeMode struct {
	mu   sync.Mutex
	rec  l2cache.ModeRecord
	puts int
	// put answers the n-th PUT (from 1); nil: the server's own rules.
	put func(n int, w http.ResponseWriter, mode string) bool
	// get, if set, is called with n before the n-th GET (from 1) is answered.
	gets int
	get  func(n int)
}

func (f *fakeMode) set(rec l2cache.ModeRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec = rec
}

func (f *fakeMode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	rec := f.rec
	f.mu.Unlock()
	if r.Method == http.MethodGet {
		f.mu.Lock()
		f.gets++
		n, get := f.gets, f.get
		f.mu.Unlock()
		if get != nil {
			get(n)
		}
		json.NewEncoder(w).Encode(map[string]any{"cluster": rec, "node": rec})
		return
	}
	var req struct{ Mode string }
	b, _ := io.ReadAll(r.Body)
	if json.Unmarshal(b, &req) != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.puts++
	n, put := f.puts, f.put
	f.mu.Unlock()
	if put != nil && put(n, w, req.Mode) {
		return
	}
	switch {
	case req.Mode == "far":
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": "l2cache: mode: far: want local, distributed or near"})
	case rec.Phase != l2cache.PhaseStable && rec.Mode != req.Mode:
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(map[string]any{"error": "l2cache: a cache mode switch is under way", "cluster": rec})
	default:
		rec = l2cache.ModeRecord{Mode: req.Mode, Phase: l2cache.PhaseStable, Epoch: rec.Epoch + 3}
		f.set(rec)
		json.NewEncoder(w).Encode(map[string]any{"cluster": rec, "node": rec})
	}
}

func doer(srv *httptest.Server, timeout time.Duration) Doer {
	hc := &http.Client{Timeout: timeout}
	return func(ctx context.Context, method string, body []byte) (int, []byte, error) {
		var rd io.Reader
		if body != nil {
			rd = strings.NewReader(string(body))
		}
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+Path, rd)
		if err != nil {
			return 0, nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
}

func TestSwitch(t *testing.T) {
	stable := func(mode string, epoch uint64) l2cache.ModeRecord {
		return l2cache.ModeRecord{Mode: mode, Phase: l2cache.PhaseStable, Epoch: epoch}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := Options{Poll: 10 * time.Millisecond}

	t.Run("answered", func(t *testing.T) {
		f := &fakeMode{rec: stable("local", 1)}
		srv := httptest.NewServer(f)
		defer srv.Close()
		res, err := Switch(ctx, doer(srv, 5*time.Second), "near", opts)
		if err != nil || res.Status != 200 || res.Record != stable("near", 4) || len(res.Open) != 0 {
			t.Fatalf("%+v %v", res, err)
		}
	})

	// The PUT outlives the client's timeout while the switch goes on and
	// lands: the switch is followed to its end, not reported failed.
	t.Run("timed out, switch lands", func(t *testing.T) {
		f := &fakeMode{rec: stable("local", 1)}
		release := make(chan struct{})
		f.put = func(n int, w http.ResponseWriter, mode string) bool {
			if n > 1 {
				return false
			}
			f.set(l2cache.ModeRecord{Mode: mode, From: "local", Phase: l2cache.PhaseDual, Epoch: 2})
			go func() {
				time.Sleep(300 * time.Millisecond)
				f.set(l2cache.ModeRecord{Mode: mode, From: "local", Phase: l2cache.PhaseSwitched, Epoch: 3})
				time.Sleep(300 * time.Millisecond)
				f.set(stable(mode, 4))
				close(release)
			}()
			<-release // the answer comes after the client gave up
			return false
		}
		srv := httptest.NewServer(f)
		defer srv.Close()
		res, err := Switch(ctx, doer(srv, 100*time.Millisecond), "distributed", opts)
		if err != nil || res.Status != 200 || res.Record != stable("distributed", 4) {
			t.Fatalf("%+v %v", res, err)
		}
		if len(res.Open) == 0 || !strings.Contains(res.Open[0], "PUT: ") || !strings.Contains(strings.Join(res.Open, "\n"), "dual") {
			t.Fatalf("open answers not noted: %q", res.Open)
		}
		if f.puts != 1 {
			t.Fatalf("%d PUTs; a switch seen under way is followed, not sent again", f.puts)
		}
	})

	// An earlier switch is still under way (409): wait for it to end,
	// then switch.
	t.Run("conflict, then switch", func(t *testing.T) {
		f := &fakeMode{rec: l2cache.ModeRecord{Mode: "near", From: "distributed", Phase: l2cache.PhaseSwitched, Epoch: 6}}
		srv := httptest.NewServer(f)
		defer srv.Close()
		go func() {
			time.Sleep(200 * time.Millisecond)
			f.set(stable("near", 7))
		}()
		res, err := Switch(ctx, doer(srv, 5*time.Second), "local", opts)
		if err != nil || res.Record != stable("local", 10) || f.puts != 2 {
			t.Fatalf("%+v %v (%d PUTs)", res, err, f.puts)
		}
		if !strings.Contains(res.Open[0], "status 409") {
			t.Fatalf("the 409 not noted: %q", res.Open)
		}
	})

	// A 503 that changed nothing: the record shows no switch, so the PUT
	// is sent again.
	t.Run("unavailable, nothing happened", func(t *testing.T) {
		f := &fakeMode{rec: stable("local", 1)}
		f.put = func(n int, w http.ResponseWriter, mode string) bool {
			if n > 2 {
				return false
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"cp: no leader"}`)
			return true
		}
		srv := httptest.NewServer(f)
		defer srv.Close()
		res, err := Switch(ctx, doer(srv, 5*time.Second), "near", opts)
		if err != nil || res.Record != stable("near", 4) || f.puts != 3 {
			t.Fatalf("%+v %v (%d PUTs)", res, err, f.puts)
		}
		if !strings.Contains(res.Open[0], "status 503: cp: no leader") {
			t.Fatalf("%q", res.Open)
		}
	})

	t.Run("refused", func(t *testing.T) {
		f := &fakeMode{rec: stable("local", 1)}
		srv := httptest.NewServer(f)
		defer srv.Close()
		res, err := Switch(ctx, doer(srv, 5*time.Second), "far", opts)
		if err == nil || res.Status != 400 || !strings.Contains(err.Error(), "want local, distributed or near") || f.puts != 1 {
			t.Fatalf("%+v %v", res, err)
		}
	})

	// A switch that never ends: Switch gives up when ctx does, saying
	// where the record stood.
	t.Run("never ends", func(t *testing.T) {
		f := &fakeMode{rec: l2cache.ModeRecord{Mode: "near", From: "local", Phase: l2cache.PhaseDual, Epoch: 2}}
		srv := httptest.NewServer(f)
		defer srv.Close()
		// ctx ends as the second read of the record begins: the first
		// was answered (a fixed 300 ms ran out before it under load).
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		f.get = func(n int) {
			if n == 2 {
				cancel()
			}
		}
		_, err := Switch(ctx, doer(srv, 5*time.Second), "distributed", opts)
		if err == nil || !strings.Contains(err.Error(), "not seen to complete") || !strings.Contains(err.Error(), "local→near dual") {
			t.Fatalf("%v", err)
		}
	})
}

// A switch whose PUT got no answer and whose record may not be read (the
// credentials were refused meanwhile) ends at once with that refusal, not
// at the deadline.
func TestSwitchRecordRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"cp: no leader"}`)
			return
		}
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":"administrators only"}`)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := Switch(ctx, doer(srv, 5*time.Second), "near", Options{Poll: 10 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "status 403: administrators only") || time.Since(start) > 30*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
}
