package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/internal/cli"
)

// bindBenchClones is 'shoal bench clones'; with --serve-baseline it is
// the baseline server the experiment starts as its own process.
func bindBenchClones(s *cli.Set) runFunc {
	o := bench.ClonesOptions{Nodes: 1, Clones: 16, Protocol: "2", Repo: bench.DefaultRepoSize}
	modes, addr := "baseline,off,cold,warm", "127.0.0.1:0"
	var nodeArgs, jsonOut, dir, serve, readyFile string
	s.Int(&o.Nodes, "n", "cluster size")
	s.Bool(&o.Spread, "spread", "spread the clones round-robin across the nodes (default: all to node 1)")
	s.Int(&o.Clones, "clones", "concurrent git clone processes per storm")
	s.Int(&o.Depth, "depth", "shallow clones of this depth (0: full)")
	s.String(&o.Protocol, "protocol", "git protocol version of the clients: 0, 1 or 2")
	s.String(&modes, "modes", "storms to run, in order: baseline, off, cold, warm")
	s.Int(&o.Repo.Files, "files", "files in the generated repository")
	s.Int(&o.Repo.Commits, "commits", "commits in the generated repository")
	s.Int(&o.Repo.Changed, "changed", "files each commit rewrites in part")
	s.String(&o.RepoDir, "repo-dir", "where the generated repository is kept between runs (default in the temporary directory)")
	s.String(&nodeArgs, "node-args", "extra flags for every node, space-separated (e.g. \"--pool-upload 4\")")
	s.String(&jsonOut, "json", "also write the results as JSON to this file")
	s.String(&dir, "dir", "scratch directory (default a temporary one, removed afterwards)")
	s.String(&serve, "serve-baseline", "internal: serve the repositories under this directory with git http-backend")
	s.String(&addr, "baseline-addr", "internal: the baseline server's address")
	s.String(&readyFile, "baseline-ready", "internal: where the baseline server writes its address")
	return func(ctx context.Context, sio stdio, _ []string) error {
		if serve != "" {
			return bench.ServeBaseline(ctx, serve, addr, readyFile)
		}
		for _, m := range strings.Split(modes, ",") {
			if m = strings.TrimSpace(m); m != "" {
				o.Modes = append(o.Modes, m)
			}
		}
		o.NodeArgs = strings.Fields(nodeArgs)
		return runBenchClones(ctx, sio.out, o, dir, jsonOut)
	}
}

func runBenchClones(ctx context.Context, stdout io.Writer, o bench.ClonesOptions, dir, jsonOut string) error {
	exe, cleanup, err := benchScratch(&dir)
	if err != nil {
		return err
	}
	defer cleanup()
	o.Binary, o.Dir = exe, dir
	o.Progress = func(s string) { fmt.Fprintln(stdout, s) }
	res, err := bench.Clones(ctx, o)
	if err != nil {
		return err
	}
	if jsonOut != "" {
		f, err := os.Create(jsonOut)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := res.WriteJSON(f); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout)
	return printClones(stdout, res)
}

// printClones writes the table, with ratios to the baseline.
func printClones(w io.Writer, r *bench.ClonesResult) error {
	target := "node1"
	if r.Spread {
		target = fmt.Sprintf("%d nodes round-robin", r.Nodes)
	}
	depth := "full"
	if r.Depth > 0 {
		depth = fmt.Sprintf("--depth %d", r.Depth)
	}
	fmt.Fprintf(w, "%d concurrent clones (%s, protocol v%s) of %d files / %d commits (%.1f MiB packed), cluster of %d, clones to %s:\n\n",
		r.Clones, depth, r.Protocol, r.Repo.Files, r.Repo.Commits, float64(r.PackBytes)/(1<<20), r.Nodes, target)
	base, hasBase := r.Row(bench.ModeBaseline)
	fmt.Fprintln(w, "| mode | storm wall | clone p50 | clone p99 | server CPU s (idle) | net CPU ms/clone | client CPU s | peak PSS MiB | MiB served | fetch hit ratio | git started | wall vs baseline | net CPU vs baseline |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, row := range r.Rows {
		wall, cpu := "", ""
		if hasBase {
			wall = fmt.Sprintf("%.2f×", float64(row.Wall)/float64(base.Wall))
			cpu = fmt.Sprintf("%.3f×", row.NetCPU()/max(base.NetCPU(), 1e-9))
		}
		hits, git := "-", "-"
		if row.Mode != bench.ModeBaseline && row.Mode != bench.ModeOff {
			hits, git = fmt.Sprintf("%.2f", row.HitRatio()), fmt.Sprint(row.GitStarted)
		}
		fmt.Fprintf(w, "| %s | %v | %v | %v | %.2f (%.2f) | %.1f | %.1f | %.0f | %.1f | %s | %s | %s | %s |\n", row.Mode,
			row.Wall.Round(time.Millisecond), row.P50.Round(time.Millisecond), row.P99.Round(time.Millisecond),
			row.ServerCPU, row.IdleCPU, 1000*row.CPUPerClone(), row.ClientCPU, float64(row.PeakPSS)/(1<<20),
			float64(row.BytesServed)/(1<<20), hits, git, wall, cpu)
	}
	warm, okW := r.Row(bench.ModeWarm)
	off, okO := r.Row(bench.ModeOff)
	if okW && okO {
		fmt.Fprintf(w, "\nwarm cache / no cache: net server CPU %.1f%% (the target is ≤ 10%%), storm wall %.2f×\n",
			100*warm.NetCPU()/max(off.NetCPU(), 1e-9), float64(warm.Wall)/float64(off.Wall))
	}
	if okW && hasBase {
		fmt.Fprintf(w, "git http-backend / warm cache: storm wall %.2f× (the target is ≥ 3×)\n", float64(base.Wall)/float64(warm.Wall))
	}
	return nil
}
