package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// TestDashboardCPUCost is the experiment behind BENCHMARKS.md's
// "The dashboard's cost": three real nodes under the coupling workload
// (bench.RunLoad, the default mix, 4 closed-loop clients spread over the
// nodes), node1's CPU time read from /proc over windows of SHOAL_UI_COST_WINDOW
// (default 60 s) with and without 10 open dashboards (10 event streams on
// node1, two on each live page), interleaved for SHOAL_UI_COST_ROUNDS
// rounds (default 3). Opt-in: SHOAL_UI_COST=1.
func TestDashboardCPUCost(t *testing.T) {
	if os.Getenv("SHOAL_UI_COST") == "" {
		t.Skip("an experiment of several minutes: set SHOAL_UI_COST=1")
	}
	window := envDuration(t, "SHOAL_UI_COST_WINDOW", 60*time.Second)
	rounds := envInt(t, "SHOAL_UI_COST_ROUNDS", 3)
	dir := t.TempDir()
	ctx := context.Background()
	const adminPW = "cost-Adm1n"
	data, err := seedCostData(ctx, filepath.Join(dir, "shoal.db"), adminPW)
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, localcluster.Options{Dir: dir, N: 3, Preset: "loopback", BootstrapExpect: 3,
		IP: func(i int) string { return fmt.Sprintf("127.0.0.%d", 70+i) }})
	if err := c.WaitAlive(ctx, 3); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, p := range c.Nodes() {
		targets = append(targets, p.HTTP)
	}
	total := time.Duration(2*rounds)*(window+5*time.Second) + 30*time.Second
	spec := bench.LoadSpec{Targets: targets, Token: data.token, Projects: data.projects, Repos: data.repos,
		Mix:  map[string]int{"view_pr": 35, "list_prs": 20, "browse_repos": 10, "list_comments": 20, "add_comment": 7, "update_pr": 6, "create_repo": 2},
		Zipf: 1.1, Seed: 1, Clients: 4, Warmup: bench.Duration(10 * time.Second), Duration: bench.Duration(total), Tag: "uicost"}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() {
		_, err := bench.RunLoad(loadCtx, spec, func(bench.LoadEvent) {})
		loadDone <- err
	}()
	t.Cleanup(func() { stopLoad(); <-loadDone })
	time.Sleep(12 * time.Second) // past the warm-up

	node1 := c.Nodes()[0]
	base := "http://" + node1.HTTP
	type result struct {
		on          bool
		cpu, others float64 // % of one core: node1, mean of node2 and node3
		events      int64
	}
	var results []result
	measure := func(on bool) {
		var streams *dashboards
		if on {
			streams = openDashboards(t, base, "admin", adminPW, 10)
			time.Sleep(2 * time.Second)
		}
		cpu0 := make([]time.Duration, 3)
		for i, p := range c.Nodes() {
			if cpu0[i], err = bench.ProcCPU(p.PID); err != nil {
				t.Fatal(err)
			}
		}
		var ev0 int64
		if streams != nil {
			ev0 = streams.events.Load()
		}
		start := time.Now()
		time.Sleep(window)
		wall := time.Since(start).Seconds()
		r := result{on: on}
		for i, p := range c.Nodes() {
			cpu1, err := bench.ProcCPU(p.PID)
			if err != nil {
				t.Fatal(err)
			}
			pctCore := 100 * (cpu1 - cpu0[i]).Seconds() / wall
			if i == 0 {
				r.cpu = pctCore
			} else {
				r.others += pctCore / 2
			}
		}
		if streams != nil {
			r.events = streams.events.Load() - ev0
			streams.close()
		}
		results = append(results, r)
		t.Logf("round %d dashboards=%v: node1 %.2f %% of a core, node2/3 mean %.2f %%, %d events delivered, load average %s",
			len(results), on, r.cpu, r.others, r.events, loadAvg())
	}
	for i := range rounds {
		if i%2 == 0 {
			measure(false)
			measure(true)
		} else {
			measure(true)
			measure(false)
		}
	}
	stopLoad()
	if err := <-loadDone; err != nil && loadCtx.Err() == nil {
		t.Fatalf("load: %v", err)
	}
	loadDone <- nil
	var on, off, onO, offO float64
	for _, r := range results {
		if r.on {
			on, onO = on+r.cpu, onO+r.others
		} else {
			off, offO = off+r.cpu, offO+r.others
		}
	}
	n := float64(rounds)
	t.Logf("mean over %d rounds of %v: node1 %.2f %% of a core without dashboards, %.2f %% with 10 (+%.2f points); node2/3 %.2f %% and %.2f %%; "+
		"node1 above node2/3 %.2f points without, %.2f with (the dashboards' share: %+.2f points)",
		rounds, window, off/n, on/n, (on-off)/n, offO/n, onO/n, (off-offO)/n, (on-onO)/n, ((on-onO)-(off-offO))/n)
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	return def
}

func envInt(t *testing.T, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return n
	}
	return def
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

type costData struct {
	token    string
	projects []string
	repos    []bench.RepoRef
}

// seedCostData seeds the coupling experiment's small data set.
func seedCostData(ctx context.Context, path, adminPW string) (*costData, error) {
	store, err := domain.Open(ctx, domain.Config{URL: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	seeded, err := domain.Seed(ctx, store, domain.SeedConfig{Users: 50, Projects: 5, ReposPerProject: 4, PRsPerRepo: 20,
		CommentsPerPR: 3, Seed: 1, AdminPassword: adminPW})
	if err != nil {
		return nil, err
	}
	d := &costData{}
	if d.token, err = store.CreateToken(ctx, seeded.Admin.ID, "ui-cost"); err != nil {
		return nil, err
	}
	rows, err := store.DB().QueryContext(ctx, `SELECT p.project_key, r.slug, pr.id FROM pull_requests pr
		JOIN repositories r ON r.id = pr.repository_id JOIN projects p ON p.id = r.project_id
		ORDER BY p.project_key, r.slug, pr.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var key, slug string
		var id int64
		if err := rows.Scan(&key, &slug, &id); err != nil {
			return nil, err
		}
		if n := len(d.projects); n == 0 || d.projects[n-1] != key {
			d.projects = append(d.projects, key)
		}
		if n := len(d.repos); n == 0 || d.repos[n-1].Project != key || d.repos[n-1].Slug != slug {
			d.repos = append(d.repos, bench.RepoRef{Project: key, Slug: slug})
		}
		d.repos[len(d.repos)-1].PRs = append(d.repos[len(d.repos)-1].PRs, id)
	}
	return d, rows.Err()
}

// dashboards are open event streams, as browsers showing the live pages
// hold them: each logs in through the form and reads its stream.
type dashboards struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	events atomic.Int64
}

var formToken = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func openDashboards(t *testing.T, base, user, pw string, n int) *dashboards {
	t.Helper()
	pages := []string{"cluster", "partitions", "caches", "git", "jobs"}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dashboards{cancel: cancel}
	for i := range n {
		jar, _ := cookiejar.New(nil)
		client := &http.Client{Jar: jar}
		resp, err := client.Get(base + "/ui/login")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := formToken.FindSubmatch(body)
		if m == nil {
			t.Fatalf("no login form: %s", body)
		}
		resp, err = client.PostForm(base+"/ui/login", url.Values{"csrf": {string(m[1])}, "username": {user}, "password": {pw}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Request.URL.Path != "/ui/cluster" {
			t.Fatalf("login ended at %s (%s)", resp.Request.URL, resp.Status)
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/ui/events?page="+pages[i%len(pages)], nil)
		resp, err = client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("event stream: %v %v", resp, err)
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				if sc.Text() == "event: update" {
					d.events.Add(1)
				}
			}
		}()
	}
	return d
}

func (d *dashboards) close() { d.cancel(); d.wg.Wait() }
