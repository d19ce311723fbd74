package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/internal/nodestats"
)

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
	dir := t.TempDir()
	exp := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(exp, []byte(`
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
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, prof := filepath.Join(dir, "out"), filepath.Join(dir, "prof")
	cmd := exec.CommandContext(ctx, shoalBin, "bench", "coupling", "--experiment", exp, "--out", out, "--profile", prof,
		"--dir", filepath.Join(dir, "scratch"), "--no-progress")
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
	want := max(1, runtime.NumCPU()/2)
	if len(res.Runs) != 1 || len(res.Runs[0]) != 1 {
		t.Fatalf("%d repeats run, want 1 of 1 arm", len(res.Runs))
	}
	if got := res.Runs[0][0].NodeProcs; res.Manifest.NodeProcs != "share" || got != want {
		t.Fatalf("manifest node_procs %q, the arm's nodes %d: want share, %d per node", res.Manifest.NodeProcs, got, want)
	}
	ar := res.Runs[0][0]
	for _, n := range ar.Nodes {
		b, err := os.ReadFile(filepath.Join(prof, "r1n2s0a0-"+n.Name+".stats1.json"))
		if err != nil {
			t.Fatal(err)
		}
		var st nodestats.Stats
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		if st.Process.GOMAXPROCS != want || st.Process.PID != n.PID {
			t.Errorf("%s: GOMAXPROCS %d (pid %d, placed %d), want %d", n.Name, st.Process.GOMAXPROCS, st.Process.PID, n.PID, want)
		}
	}
}
