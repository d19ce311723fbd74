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
func single(t *testing.T) *Server { return singleWith(t, nil) }

// singleWith is single with the configuration changed by change.
func singleWith(t testing.TB, change func(*Config)) *Server {
	t.Helper()
	cfg := DefaultNodeConfig(PresetLoopback)
	cfg.Cluster.Name, cfg.Cluster.BindAddr = "solo", "127.0.0.1:0"
	cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.Store.BootstrapExpect = 1
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if change != nil {
		change(&cfg)
	}
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

// errMessage is the first message of an error body
// {"errors":[{"message": …}]}, "" if out is not one.
func errMessage(out map[string]any) string {
	errs, _ := out["errors"].([]any)
	if len(errs) == 0 {
		return ""
	}
	m, _ := errs[0].(map[string]any)
	msg, _ := m["message"].(string)
	return msg
}

// userToken creates a user (an administrator if admin) and returns an
// access token of theirs.
func userToken(t testing.TB, s *Server, name string, admin bool) string {
	t.Helper()
	ctx := context.Background()
	u, err := s.DB().CreateUser(ctx, domain.NewUser{Name: name, DisplayName: name, Admin: admin})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.DB().CreateToken(ctx, u.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do sends a request with token as a Bearer token ("" for none).
func do(t *testing.T, token, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
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
	tok := userToken(t, s, "root", true)
	if code, out := do(t, tok, "PUT", base+"/v1/kv/a/b", "hello"); code != 200 || out["version"] == nil {
		t.Fatalf("put: %d %v", code, out)
	}
	code, out := do(t, tok, "GET", base+"/v1/kv/a/b", "")
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
		code, out := do(t, tok, tc.method, base+tc.path, tc.body)
		msg := errMessage(out)
		if code != tc.want || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %.40s: %d %q, want %d with %q", tc.method, tc.path, code, msg, tc.want, tc.msg)
		}
	}
	if list := s.Store().StaleList("a/"); len(list) != 1 {
		t.Fatalf("rejected requests wrote something: %v", list)
	}
	if code, _ := do(t, tok, "PUT", base+"/v1/kv/a/b?cas="+strconv.FormatFloat(v, 'f', 0, 64), "new"); code != 200 {
		t.Fatalf("cas with the right version: %d", code)
	}
	if code, _ := do(t, tok, "DELETE", base+"/v1/kv/a/b", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
}

// GET /v1/cluster and /v1/stats: an authenticated user sees the members
// and counters, an administrator also their addresses and the process;
// an anonymous caller gets 401.
func TestClusterAndStatsNeedAUser(t *testing.T) {
	s := single(t)
	base := "http://" + s.HTTPAddr()
	admin, user := userToken(t, s, "root", true), userToken(t, s, "bob", false)
	view := func(tok string) (int, ClusterView) {
		req, _ := http.NewRequest("GET", base+"/v1/cluster", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v ClusterView
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	code, v := view(admin)
	if code != 200 || v.Raft.Leader != "solo" || len(v.Members) != 1 || v.Members[0].RaftRole != "leader" ||
		v.Members[0].HTTP != s.HTTPAddr() || v.Members[0].RPC == "" || v.Members[0].Gossip == "" || v.Members[0].Raft == "" {
		t.Fatalf("an administrator's view: %d %+v", code, v)
	}
	code, v = view(user)
	if m := v.Members; code != 200 || len(m) != 1 || m[0].State != "alive" || m[0].RaftRole != "leader" ||
		m[0].HTTP != "" || m[0].RPC != "" || m[0].Gossip != "" || m[0].Raft != "" {
		t.Fatalf("a user's view: %d %+v", code, v)
	}
	if code, _ := view(""); code != 401 {
		t.Fatalf("anonymous GET /v1/cluster: %d", code)
	}
	code, out := do(t, admin, "GET", base+"/v1/stats", "")
	if proc, _ := out["process"].(map[string]any); code != 200 || proc["pid"] == nil || proc["rss_bytes"] == nil {
		t.Fatalf("an administrator's stats: %d %v", code, out)
	}
	code, out = do(t, user, "GET", base+"/v1/stats", "")
	if _, has := out["process"]; code != 200 || has || out["node"] != "solo" {
		t.Fatalf("a user's stats: %d %v", code, out)
	}
	if code, _ := do(t, "", "GET", base+"/v1/stats", ""); code != 401 {
		t.Fatalf("anonymous GET /v1/stats: %d", code)
	}
}

// /healthz, /readyz and /metrics are open; with MetricsAuth /metrics
// needs a user's token.
func TestMetricsAuth(t *testing.T) {
	for _, protect := range []bool{false, true} {
		s := singleWith(t, func(c *Config) { c.HTTP.MetricsAuth = protect })
		base := "http://" + s.HTTPAddr()
		user := userToken(t, s, fmt.Sprintf("bob-%v", protect), false)
		testkit.Eventually(t, 20*time.Second, "ready", func() bool { code, _ := do(t, "", "GET", base+"/readyz", ""); return code == 200 })
		if code, _ := do(t, "", "GET", base+"/healthz", ""); code != 200 {
			t.Fatalf("anonymous /healthz: %d", code)
		}
		want := map[bool]int{false: 200, true: 401}[protect]
		if code, _ := do(t, "", "GET", base+"/metrics", ""); code != want {
			t.Fatalf("anonymous /metrics with MetricsAuth %v: %d, want %d", protect, code, want)
		}
		if code, _ := do(t, "shoal_wrong", "GET", base+"/metrics", ""); protect && code != 401 {
			t.Fatalf("/metrics with a bad token: %d", code)
		}
		req, _ := http.NewRequest("GET", base+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+user)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "shoal_pool_served_total") {
			t.Fatalf("/metrics with a user's token: %d %.200s", resp.StatusCode, b)
		}
	}
}

// Every /v1/kv and /v1/jobs route refuses an anonymous caller (401) and
// a user who is not an administrator (403), and writes nothing; an
// administrator may read the system's keys but not write them.
func TestControlPlaneNeedsAnAdministrator(t *testing.T) {
	s := single(t)
	base := "http://" + s.HTTPAddr()
	ctx := context.Background()
	admin, user := userToken(t, s, "root", true), userToken(t, s, "bob", false)
	testkit.Eventually(t, 20*time.Second, "the built-in jobs to be scheduled", func() bool {
		jobs, err := s.svc.sched.Jobs(ctx)
		return err == nil && len(jobs) == 2
	})
	v0, err := s.Store().Put(ctx, "app/x", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	job := `{"runner":"kv.record-run","mode":"cluster","params":"cmVjLw==","schedule":{"kind":"interval","every":"1h","first":"2020-01-01T00:00:00Z"}}`
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/kv?prefix=", ""}, {"GET", "/v1/kv/app/x", ""}, {"GET", "/v1/kv/l2/partitions", ""},
		{"PUT", "/v1/kv/app/x", "2"}, {"PUT", "/v1/kv/app/x?cas=1", "2"}, {"PUT", "/v1/kv/app/new", "2"},
		{"DELETE", "/v1/kv/app/x", ""}, {"DELETE", "/v1/kv/app/x?version=1", ""},
		{"PUT", "/v1/kv/stats/cluster", "<script>"}, {"DELETE", "/v1/kv/scheduler/jobs/cluster-stats", ""},
		{"GET", "/v1/jobs", ""}, {"GET", "/v1/jobs?stale=true", ""}, {"GET", "/v1/jobs/cluster-stats", ""},
		{"PUT", "/v1/jobs/evil", job}, {"DELETE", "/v1/jobs/cluster-stats", ""},
		{"POST", "/v1/jobs/cluster-stats/run-now", ""}, {"POST", "/v1/jobs/cluster-stats/pause", ""},
		{"POST", "/v1/jobs/cluster-stats/resume", ""}, {"GET", "/v1/jobs/nope/more", ""},
		{"GET", "/debug/pprof/", ""}, {"GET", "/debug/pprof/cmdline", ""}, {"GET", "/debug/pprof/profile?seconds=1", ""},
		{"GET", "/debug/pprof/heap", ""}, {"GET", "/debug/pprof/trace?seconds=1", ""},
	}
	for _, who := range []struct {
		tok  string
		want int
	}{{"", 401}, {user, 403}, {"shoal_not-a-token", 401}} {
		for _, r := range routes {
			if code, out := do(t, who.tok, r.method, base+r.path, r.body); code != who.want {
				t.Errorf("%s %s as %q: %d %v, want %d", r.method, r.path, who.tok, code, out, who.want)
			}
		}
	}
	if list := s.Store().StaleList("app/"); len(list) != 1 || list[0].Key != "app/x" || string(list[0].Value) != "1" || list[0].Version != v0 {
		t.Fatalf("refused requests wrote under app/: %v", list)
	}
	if kv, err := s.Store().StaleGet("stats/cluster"); err == nil && strings.Contains(string(kv.Value), "<script>") {
		t.Fatal("a refused request wrote stats/cluster")
	}
	if _, err := s.Store().StaleGet("scheduler/jobs/cluster-stats"); err != nil {
		t.Fatalf("scheduler/jobs/cluster-stats after refused deletes: %v", err)
	}
	st, err := s.svc.sched.Job(ctx, "cluster-stats")
	if err != nil || st.Paused || !st.RunNowAt.IsZero() {
		t.Fatalf("refused requests changed the job: %+v %v", st, err)
	}
	if _, err := s.svc.sched.Job(ctx, "evil"); err == nil {
		t.Fatal("a refused request created a job")
	}
	// An administrator reads the system's keys, and may not write them.
	if code, out := do(t, admin, "GET", base+"/v1/kv/scheduler/jobs/cluster-stats", ""); code != 200 {
		t.Fatalf("an administrator reading a job's key: %d %v", code, out)
	}
	for _, key := range []string{"l2/partitions", "l2/mode", "scheduler/jobs/cluster-stats", "packcache/gen/P/r", "stats/cluster", "stats/other"} {
		for _, m := range []string{"PUT", "DELETE"} {
			code, out := do(t, admin, m, base+"/v1/kv/"+key, "x")
			if msg := fmt.Sprint(out); code != 403 || !strings.Contains(msg, "read-only") {
				t.Errorf("an administrator's %s %s: %d %v, want 403 read-only", m, key, code, out)
			}
		}
	}
	if code, out := do(t, admin, "PUT", base+"/v1/kv/app/x", "2"); code != 200 {
		t.Fatalf("an administrator's write: %d %v", code, out)
	}
	// An administrator takes the node's Go profiles.
	req, _ := http.NewRequest("GET", base+"/debug/pprof/profile?seconds=1", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	prof, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// A CPU profile is gzip-compressed protobuf.
	if resp.StatusCode != 200 || len(prof) < 2 || prof[0] != 0x1f || prof[1] != 0x8b {
		t.Fatalf("an administrator's CPU profile: %d, %d bytes %q", resp.StatusCode, len(prof), prof[:min(len(prof), 64)])
	}
	if code, _ := do(t, admin, "GET", base+"/debug/pprof/cmdline", ""); code != 200 {
		t.Fatalf("an administrator's /debug/pprof/cmdline: %d", code)
	}
}

// Every key a running node writes by itself is under one of the system's
// prefixes, so that /v1/kv serves it read-only.
func TestSystemKeysAreCovered(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	testkit.Eventually(t, 20*time.Second, "the built-in jobs to be scheduled", func() bool {
		jobs, err := s.svc.sched.Jobs(ctx)
		return err == nil && len(jobs) == 2
	})
	if err := nodestats.RollupRunner(&s.svc.stats, s.Store()).Run(ctx, scheduler.Request{}); err != nil {
		t.Fatal(err)
	}
	p, err := s.svc.gens.BeginPush(ctx, "P/r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.End(ctx); err != nil {
		t.Fatal(err)
	}
	list := s.Store().StaleList("")
	prefixes := map[string]bool{}
	for _, kv := range list {
		covered := false
		for _, p := range SystemKeyPrefixes {
			if strings.HasPrefix(kv.Key, p) {
				covered, prefixes[p] = true, true
			}
		}
		if !covered {
			t.Errorf("the node wrote %q, under none of %v", kv.Key, SystemKeyPrefixes)
		}
	}
	if len(prefixes) < 3 {
		t.Fatalf("only %v among %d keys: the test did not exercise the parts", prefixes, len(list))
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
	tok := userToken(t, s, "root", true)
	job := `{"runner":"kv.record-run","mode":"cluster","params":"` + base64.StdEncoding.EncodeToString([]byte("rec/")) +
		`","schedule":{"kind":"interval","every":"1s","first":"2020-01-01T00:00:00Z"}}`
	if code, out := do(t, tok, "PUT", base+"/v1/jobs/rec", job); code != 200 {
		t.Fatalf("schedule: %d %v", code, out)
	}
	// The API refuses a job faster than --jobs-min-interval, or with a
	// runner no node has.
	for _, bad := range []string{strings.Replace(job, `"1s"`, `"1ms"`, 1), strings.Replace(job, "kv.record-run", "no-such-runner", 1)} {
		if code, out := do(t, tok, "PUT", base+"/v1/jobs/bad", bad); code != 400 {
			t.Errorf("PUT %s: %d %v, want 400", bad, code, out)
		}
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
			len(fire) != 20 || fire != fmt.Sprintf("%020d", rec.FireTime.UnixNano()) || rec.FireTime.UnixNano()%int64(time.Second) != 0 {
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
	tok := userToken(t, s, "root", true)
	if code, _ := do(t, tok, "PUT", base+"/v1/kv/k", "v"); code != 200 {
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
		req, _ := http.NewRequest("GET", base+p, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
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
