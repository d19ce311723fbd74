package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/scheduler"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

// single starts a one-node cluster that bootstraps its own raft group.
func single(t *testing.T) *Server {
	t.Helper()
	cfg := DefaultNodeConfig(PresetLoopback)
	cfg.Cluster.Name, cfg.Cluster.BindAddr = "solo", "127.0.0.1:0"
	cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.Store.BootstrapExpect = 1
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	deadline := time.Now().Add(10 * time.Second)
	for s.Store().Status().Role != "leader" {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func TestKVAPI(t *testing.T) {
	s := single(t)
	base := "http://" + s.HTTPAddr()
	if code, out := do(t, "PUT", base+"/v1/kv/a/b", "hello"); code != 200 || out["version"] == nil {
		t.Fatalf("put: %d %v", code, out)
	}
	code, out := do(t, "GET", base+"/v1/kv/a/b", "")
	if code != 200 || out["value"] != "hello" {
		t.Fatalf("get: %d %v", code, out)
	}
	v := out["version"].(float64)
	for _, tc := range []struct {
		method, path, body string
		want               int
		msg                string
	}{
		{"GET", "/v1/kv/missing", "", 404, "not found"},
		{"PUT", "/v1/kv/a/b?cas=1", "x", 409, "version mismatch"},
		{"PUT", "/v1/kv/a/b?cas=abc", "x", 400, "not a version number"},
		{"PUT", "/v1/kv/a/b?cas=-1", "x", 400, "not a version number"},
		{"GET", "/v1/kv/a/b?stale=maybe", "", 400, "not true or false"},
		{"PUT", "/v1/kv/" + strings.Repeat("k", 2000), "x", 413, "exceeds the limit"},
		{"PUT", "/v1/kv/big", strings.Repeat("v", 2<<20), 413, "exceeds the limit"},
		{"PUT", "/v1/kv/huge", strings.Repeat("v", 9<<20), 413, "request body"},
		{"DELETE", "/v1/kv/a/b?version=1", "", 409, "version mismatch"},
	} {
		code, out := do(t, tc.method, base+tc.path, tc.body)
		msg, _ := out["error"].(string)
		if code != tc.want || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %.40s: %d %q, want %d with %q", tc.method, tc.path, code, msg, tc.want, tc.msg)
		}
	}
	if list := s.Store().StaleList("a/"); len(list) != 1 {
		t.Fatalf("rejected requests wrote something: %v", list)
	}
	if code, _ := do(t, "PUT", base+"/v1/kv/a/b?cas="+strconv.FormatFloat(v, 'f', 0, 64), "new"); code != 200 {
		t.Fatalf("cas with the right version: %d", code)
	}
	if code, _ := do(t, "DELETE", base+"/v1/kv/a/b", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	var view ClusterView
	resp, err := http.Get(base + "/v1/cluster")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&view)
	resp.Body.Close()
	if view.Raft.Leader != "solo" || len(view.Members) != 1 || view.Members[0].RaftRole != "leader" {
		t.Fatalf("cluster view: %+v", view)
	}
}

// The built-in jobs are scheduled on a fresh node, and the statistics
// rollup they run is served to administrators only.
func TestBuiltinJobsAndClusterStats(t *testing.T) {
	s := single(t)
	base := "http://" + s.HTTPAddr()
	ctx := context.Background()
	testkit.Eventually(t, 20*time.Second, "the built-in jobs to be scheduled", func() bool {
		jobs, err := s.svc.sched.Jobs(ctx)
		return err == nil && len(jobs) == 2
	})
	if _, err := s.DB().CreateUser(ctx, domain.NewUser{Name: "root", DisplayName: "Root", Email: "root@example.com", Password: "root-password", Admin: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().CreateUser(ctx, domain.NewUser{Name: "bob", DisplayName: "Bob", Email: "bob@example.com", Password: "bob-password"}); err != nil {
		t.Fatal(err)
	}
	get := func(user, pass string) (int, string) {
		req, _ := http.NewRequest("GET", base+"/rest/api/1.0/admin/cluster-stats", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The job runs on a 30 s grid: pause it, so that no rollup but the
	// test's own is written.
	if err := s.svc.sched.Pause(ctx, "cluster-stats"); err != nil {
		t.Fatal(err)
	}
	if err := s.Store().Delete(ctx, nodestats.RollupKey); err != nil && !errors.Is(err, cp.ErrNotFound) {
		t.Fatal(err)
	}
	if code, body := get("root", "root-password"); code != 404 || !strings.Contains(body, "no rollup yet") {
		t.Fatalf("before any rollup: %d %s", code, body)
	}
	if err := nodestats.RollupRunner(&s.svc.stats, s.Store()).Run(ctx, scheduler.Request{}); err != nil {
		t.Fatal(err)
	}
	code, body := get("root", "root-password")
	var cs nodestats.ClusterStats
	if code != 200 || json.Unmarshal([]byte(body), &cs) != nil || len(cs.Nodes) != 1 || cs.Nodes[0].Node != "solo" || cs.Total.CPUSeconds <= 0 {
		t.Fatalf("rollup: %d %s", code, body)
	}
	if code, _ := get("", ""); code != 401 {
		t.Fatalf("anonymous: %d", code)
	}
	if code, _ := get("bob", "bob-password"); code != 403 {
		t.Fatalf("not an administrator: %d", code)
	}
}

// A job with the kv.record-run runner, scheduled through the API, leaves
// one key per fire time under the prefix in its parameters.
func TestRecordRunRunner(t *testing.T) {
	s := single(t)
	base := "http://" + s.HTTPAddr()
	job := `{"runner":"kv.record-run","mode":"cluster","params":"` + base64.StdEncoding.EncodeToString([]byte("rec/")) +
		`","schedule":{"kind":"interval","every":"500ms","first":"2020-01-01T00:00:00Z"}}`
	if code, out := do(t, "PUT", base+"/v1/jobs/rec", job); code != 200 {
		t.Fatalf("schedule: %d %v", code, out)
	}
	testkit.Eventually(t, 20*time.Second, "two recorded runs", func() bool { return len(s.Store().StaleList("rec/")) >= 2 })
	var prev string
	for _, kv := range s.Store().StaleList("rec/") {
		var rec struct {
			Node     string    `json:"node"`
			FireTime time.Time `json:"fire_time"`
		}
		parts := strings.Split(strings.TrimPrefix(kv.Key, "rec/"), "/")
		if len(parts) != 3 {
			t.Fatalf("record key %s", kv.Key)
		}
		fire, node := parts[0], parts[1]
		if err := json.Unmarshal(kv.Value, &rec); err != nil || node != "solo" || rec.Node != "solo" ||
			len(fire) != 20 || fire != fmt.Sprintf("%020d", rec.FireTime.UnixNano()) || rec.FireTime.UnixNano()%int64(500*time.Millisecond) != 0 {
			t.Fatalf("record %s = %s (%v)", kv.Key, kv.Value, err)
		}
		if fire <= prev {
			t.Fatalf("fire times out of order or repeated: %s after %s", fire, prev)
		}
		prev = fire
	}
	for _, params := range []string{"", strings.Repeat("p", 201), "\xff"} {
		if err := scheduler.RecordRun(s.Store()).Run(context.Background(), scheduler.Request{Params: []byte(params), FireTime: time.Now(), Node: "solo"}); err == nil {
			t.Errorf("parameters %q accepted", params)
		}
	}
}

// The node's own /v1 API names every JSON field in snake_case (the REST
// API under /rest follows Bitbucket's lowerCamel instead).
func TestV1JSONIsSnakeCase(t *testing.T) {
	s := single(t)
	base := "http://" + s.HTTPAddr()
	if code, _ := do(t, "PUT", base+"/v1/kv/k", "v"); code != 200 {
		t.Fatal("put failed")
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	var walk func(path string, v any, data bool)
	walk = func(path string, v any, data bool) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if !data && !snake.MatchString(k) {
					t.Errorf("%s: field %q is not snake_case", path, k)
				}
				// The keys of "regions" are region names, not fields.
				walk(path+"."+k, e, !data && k == "regions")
			}
		case []any:
			for _, e := range x {
				walk(path+"[]", e, false)
			}
		}
	}
	for _, p := range []string{"/v1/stats", "/v1/cluster", "/v1/kv/k", "/v1/kv", "/healthz"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", p, resp.StatusCode, err)
		}
		walk(p, v, false)
	}
}
