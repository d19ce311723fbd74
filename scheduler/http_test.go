package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func call(t *testing.T, srv *httptest.Server, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestHTTPAPI(t *testing.T) {
	clock := NewFakeClock(t0)
	rec := &recorder{}
	s := localScheduler(t, clock, rec)
	srv := httptest.NewServer(Handler(s))
	defer srv.Close()

	code, body := call(t, srv, "PUT", "/v1/jobs/sweep",
		`{"runner":"r","mode":"local","params":"AQI=","schedule":{"kind":"interval","every":"1m","first":"2026-05-01T12:01:00Z"}}`)
	if code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.ID != "sweep" || st.Schedule.Every != time.Minute || st.State != StateScheduled || string(st.Params) != "\x01\x02" {
		t.Fatalf("status %+v", st)
	}
	if code, body := call(t, srv, "POST", "/v1/jobs/sweep/run-now", ""); code != 200 {
		t.Fatalf("run-now: %d %s", code, body)
	}
	testkit.Eventually(t, 5*time.Second, "the run-now", func() bool { return rec.count() == 1 })
	// A job without a runner can only be scheduled in code (the API
	// refuses it, below).
	if err := s.Schedule(context.Background(), Job{ID: "norunner", Runner: "x", Mode: RunLocally, Schedule: Once(t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/jobs", "", 200},
		{"GET", "/v1/jobs?stale=true", "", 200},
		{"GET", "/v1/jobs/sweep", "", 200},
		{"GET", "/v1/jobs/nope", "", 404},
		{"POST", "/v1/jobs/sweep/pause", "", 200},
		{"POST", "/v1/jobs/sweep/resume", "", 200},
		{"POST", "/v1/jobs/nope/pause", "", 404},
		{"PUT", "/v1/jobs/bad", `{"runner":"r","mode":"local","schedule":{"kind":"cron","cron":"nope"}}`, 400},
		{"PUT", "/v1/jobs/bad", `{"id":"other","runner":"r","mode":"local","schedule":{"kind":"once","at":"2026-05-01T12:00:00Z"}}`, 400},
		{"PUT", "/v1/jobs/bad", `not json`, 400},
		{"PUT", "/v1/jobs/other", `{"runner":"x","mode":"local","schedule":{"kind":"once","at":"2026-05-01T13:00:00Z"}}`, 400},
		{"PUT", "/v1/jobs/fast", `{"runner":"r","mode":"local","schedule":{"kind":"interval","every":"1ms","first":"2026-05-01T12:01:00Z"}}`, 400},
		{"PUT", "/v1/jobs/fast", `{"runner":"r","mode":"local","schedule":{"kind":"interval","every":"999ms","first":"2026-05-01T12:01:00Z"}}`, 400},
		{"PUT", "/v1/jobs/fast", `{"runner":"r","mode":"local","schedule":{"kind":"cron","cron":"*/1 * * * * *"}}`, 200},
		{"PUT", "/v1/jobs/fast", `{"runner":"r","mode":"local","schedule":{"kind":"interval","every":"1s","first":"2026-05-01T12:01:00Z"}}`, 200},
		{"GET", "/v1/jobs/other", "", 404},
		{"DELETE", "/v1/jobs/fast", "", 200},
		{"POST", "/v1/jobs/norunner/run-now", "", 409},
		{"DELETE", "/v1/jobs/sweep", "", 200},
		{"DELETE", "/v1/jobs/sweep", "", 404},
	} {
		if code, body := call(t, srv, tc.method, tc.path, tc.body); code != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
	code, body = call(t, srv, "GET", "/v1/jobs", "")
	var list []Status
	if err := json.Unmarshal(body, &list); err != nil || code != 200 || len(list) != 1 || list[0].State != StateWaiting {
		t.Fatalf("list: %d %s %v", code, body, err)
	}
}
