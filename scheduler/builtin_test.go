package scheduler

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// Ensure puts jobs in place on a cluster; Mount serves them; a
// RecordRun job leaves one key per fire time, and refuses bad parameters.
func TestEnsureMountAndRecordRun(t *testing.T) {
	_, members, scheds := startCluster(t, clusterOpts{seed: 11})
	for _, s := range scheds {
		if err := s.Register(RunnerRecordRun, RecordRun(members[0].Store)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job := Job{ID: "rec", Runner: RunnerRecordRun, Mode: RunOncePerCluster, Params: []byte("rec/"),
		Schedule: Every(300*time.Millisecond, time.Unix(0, 0).UTC())}
	for _, s := range scheds {
		s.Ensure(ctx, job) // every node the same definition: no change after the first
	}
	mux := http.NewServeMux()
	Mount(mux, scheds[1])
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/jobs/rec")
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 200 || st.ID != "rec" {
		t.Fatalf("GET /v1/jobs/rec: %d %+v", resp.StatusCode, st)
	}
	testkit.Eventually(t, 30*time.Second, "three recorded runs", func() bool { return len(members[0].Store.StaleList("rec/")) >= 3 })
	seen := map[string]bool{}
	for _, kv := range members[0].Store.StaleList("rec/") {
		parts := strings.Split(strings.TrimPrefix(kv.Key, "rec/"), "/")
		var rec struct {
			Node     string    `json:"node"`
			FireTime time.Time `json:"fire_time"`
		}
		if len(parts) != 3 || json.Unmarshal(kv.Value, &rec) != nil || rec.Node != parts[1] || len(parts[0]) != 20 {
			t.Fatalf("record %s = %s", kv.Key, kv.Value)
		}
		if seen[parts[0]] {
			t.Fatalf("two runs of the fire time %s", parts[0])
		}
		seen[parts[0]] = true
	}
	run := RecordRun(members[0].Store)
	for _, params := range []string{"", strings.Repeat("p", 201), "\xff"} {
		if err := run.Run(ctx, Request{Params: []byte(params), FireTime: time.Now(), Node: "n"}); err == nil {
			t.Errorf("parameters %q accepted", params)
		}
	}
	// Ensure returns when its context ends, even while a job cannot be
	// placed (this one is refused every time: a negative interval).
	done := make(chan struct{})
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		scheds[0].Ensure(cctx, Job{ID: "bad", Runner: RunnerRecordRun, Mode: RunOncePerCluster, Schedule: Every(-time.Second, time.Now())})
	}()
	ccancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Ensure did not return when its context ended")
	}
}
