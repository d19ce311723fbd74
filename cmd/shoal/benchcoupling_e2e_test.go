package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/internal/cpupin"
	"github.com/shoal-dev/shoal/internal/nodestats"
)

// tinyProcsExperiment is a one-arm experiment at 2 nodes that takes seconds.
const tinyProcsExperiment = `
name: tiny-procs
modes: [near]
sizes: [2]
stages:
  clients: [3]
  duration: 1s
  warmup: 500ms
mix: {view_pr: 4, list_prs: 2, add_comment: 1}
data: {users: 3, projects: 1, repos_per_project: 2, prs_per_repo: 3, comments_per_pr: 1}
zipf: 1.2
seed: 7
quiet: {max_other_cpu: 1, retries: 0}
`

// runTinyCoupling runs 'shoal bench coupling' on tinyProcsExperiment with
// args, profiled, and returns its results and the profile directory.
func runTinyCoupling(t *testing.T, args ...string) (bench.CouplingResults, string) {
	t.Helper()
	dir := t.TempDir()
	exp := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(exp, []byte(tinyProcsExperiment), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, prof := filepath.Join(dir, "out"), filepath.Join(dir, "prof")
	cmd := exec.CommandContext(ctx, shoalBin, append([]string{"bench", "coupling", "--experiment", exp, "--out", out, "--profile", prof,
		"--dir", filepath.Join(dir, "scratch"), "--no-progress"}, args...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=") // the runner's own setting is not the nodes'
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bench coupling: %v\n%s", err, b)
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res bench.CouplingResults
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 1 || len(res.Runs[0]) != 1 {
		t.Fatalf("%d repeats run, want 1 of 1 arm", len(res.Runs))
	}
	return res, prof
}

// nodeStats reads the /v1/stats a --profile run saved for node at the end
// of stage 0 of the tiny experiment.
func nodeStats(t *testing.T, prof, node string) nodestats.Stats {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(prof, "r1n2s0a0-"+node+".stats1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st nodestats.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// 'shoal bench coupling' with its nodes as processes gives each node its
// share of the machine's CPUs by default (--node-procs 0): the results
// say so, and the nodes' own /v1/stats (saved beside the --profile
// profiles, at the end of a loaded window) show it. With the runtime's
// default a loaded node on a machine of two CPUs or more would run on
// all of them.
func TestBenchCouplingNodeProcs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	res, prof := runTinyCoupling(t)
	want := max(1, runtime.NumCPU()/2)
	if got := res.Runs[0][0].NodeProcs; res.Manifest.NodeProcs != "share" || got != want {
		t.Fatalf("manifest node_procs %q, the arm's nodes %d: want share, %d per node", res.Manifest.NodeProcs, got, want)
	}
	if res.Manifest.Pinning != "" {
		t.Errorf("pinned without --pin-loadgen: %q", res.Manifest.Pinning)
	}
	for _, n := range res.Runs[0][0].Nodes {
		st := nodeStats(t, prof, n.Name)
		if st.Process.GOMAXPROCS != want || st.Process.PID != n.PID {
			t.Errorf("%s: GOMAXPROCS %d (pid %d, placed %d), want %d", n.Name, st.Process.GOMAXPROCS, st.Process.PID, n.PID, want)
		}
	}
}

// With --pin-loadgen the load generator runs on the first CPU and the
// nodes on the others: each node's /v1/stats, saved at the end of a
// loaded window, shows the CPUs it may run on, and its share of them.
func TestBenchCouplingPinLoadgen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	cpus, err := cpupin.Available()
	if err != nil || len(cpus) < 2 {
		t.Skipf("needs Linux and 2 CPUs: %v, %v", cpus, err)
	}
	res, prof := runTinyCoupling(t, "--pin-loadgen")
	rest := cpupin.String(cpus[1:])
	if !strings.Contains(res.Manifest.Pinning, "load generator on CPU "+cpupin.String(cpus[:1])) || !strings.HasSuffix(res.Manifest.Pinning, "on CPU "+rest) {
		t.Errorf("manifest pinning %q", res.Manifest.Pinning)
	}
	want := max(1, (len(cpus)-1)/2)
	ar := res.Runs[0][0]
	if ar.NodeProcs != want || ar.Stages[0].Total.Count == 0 || ar.Stages[0].Total.Errors > 0 {
		t.Errorf("nodes' GOMAXPROCS %d (want %d), %d operations, %d failed", ar.NodeProcs, want, ar.Stages[0].Total.Count, ar.Stages[0].Total.Errors)
	}
	for _, n := range ar.Nodes {
		if st := nodeStats(t, prof, n.Name); st.Process.CPUs != rest || st.Process.GOMAXPROCS != want {
			t.Errorf("%s runs on CPUs %q with GOMAXPROCS %d, want %q and %d", n.Name, st.Process.CPUs, st.Process.GOMAXPROCS, rest, want)
		}
	}
}
