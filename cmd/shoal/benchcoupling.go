package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/internal/cli"
)

// bindBenchCoupling is 'shoal bench coupling': the LOCAL vs DISTRIBUTED
// vs NEAR experiment, and the switch stage if the experiment has one. Ctrl-C stops it and still writes the stages it completed.
func bindBenchCoupling(s *cli.Set) runFunc {
	c := couplingSettings{expFile: "bench/experiments/default.yaml", out: "coupling-results", repeat: 1, warmupArm: true}
	s.String(&c.expFile, "experiment", "experiment file (YAML): arms, stages, mix, data set")
	s.String(&c.out, "out", "directory for results.json, report.md and the charts")
	s.String(&c.dir, "dir", "scratch directory for databases and node directories (default a temporary one, removed afterwards)")
	s.Bool(&c.inProcess, "in-process", "run the nodes inside this process (a quick look; they share its CPU)")
	s.Bool(&c.loadgenInProcess, "loadgen-in-process", "run the load generator inside this process instead of its own")
	s.Int(&c.repeat, "repeat", "run the whole experiment this many times, to show run-to-run spread")
	s.String(&c.profile, "profile", "directory for CPU profiles of every node over each stage's measured window (TAG-NODE.pprof) and over each mode's steady window of the switch stage (TAG-wNN-MODE-NODE.pprof), each with the node's /v1/stats at both ends of its window (.stats0.json, .stats1.json)")
	s.Int(&c.nodeProcs, "node-procs", "GOMAXPROCS of each node process: 0 gives each node its share of the machine, max(1, CPUs / nodes), as if on a host of its own; -1 leaves the Go runtime's default (every CPU in every node, so nodes oversubscribe the machine)")
	s.Bool(&c.postgres, "postgres", "the nodes of each arm share a PostgreSQL server (installed here: Debian's postgresql; started on loopback for the run) instead of a SQLite file, as a cluster on several hosts must")
	s.Bool(&c.warmupArm, "warmup-arm", "before the first repeat, run the first stage of the first arm once and discard it (a run's first arm was otherwise often its slowest)")
	s.Bool(&c.pinLoadgen, "pin-loadgen", "keep the load generator on a CPU of its own and the nodes (and the PostgreSQL server) on the others, as if it ran on a host of its own (Linux, at least 2 CPUs)")
	s.Bool(&c.quiet, "no-progress", "no progress (a bar on a terminal, plain lines otherwise)")
	return func(ctx context.Context, sio stdio, _ []string) error { return c.run(ctx, sio) }
}

type couplingSettings struct {
	expFile, out, dir, profile         string
	inProcess, loadgenInProcess, quiet bool
	postgres, warmupArm, pinLoadgen    bool
	repeat, nodeProcs                  int
}

func (c *couplingSettings) run(ctx context.Context, sio stdio) error {
	stdout := sio.out
	if c.repeat < 1 || c.repeat > 20 {
		return usagef("--repeat %d: want 1 to 20", c.repeat)
	}
	if c.nodeProcs < bench.NodeProcsDefault || c.nodeProcs > 1024 {
		return usagef("--node-procs %d: want -1 (the runtime's default), 0 (each node its share) or 1 to 1024", c.nodeProcs)
	}
	if c.out == "" {
		return usagef("--out must not be empty")
	}
	exp, raw, err := bench.LoadExperiment(c.expFile)
	if err != nil {
		return usagef("--experiment %v", err)
	}
	exe, cleanup, err := benchScratch(&c.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	o := bench.CouplingOptions{Experiment: exp, ExperimentFile: string(raw), Binary: exe, InProcess: c.inProcess,
		LoadgenInProcess: c.loadgenInProcess, Dir: c.dir, Repeat: c.repeat, Warnings: sio.err, ProfileDir: c.profile,
		NodeProcs: c.nodeProcs, Postgres: c.postgres, WarmupArm: c.warmupArm, PinLoadgen: c.pinLoadgen}
	if c.profile != "" {
		if err := os.MkdirAll(c.profile, 0o755); err != nil {
			return err
		}
	}
	if !c.quiet {
		o.Progress = sio.err
	}
	fmt.Fprintf(stdout, "coupling experiment %q: %d arms × %d stages, %d repeat(s); nodes %s\n", exp.Name, len(exp.Arms()),
		len(exp.Stages.Clients), c.repeat, map[bool]string{true: "in process", false: "as processes"}[c.inProcess])
	res, runErr := bench.Coupling(ctx, o)
	if res == nil || len(res.Runs) == 0 {
		return runErr
	}
	if err := bench.WriteReport(c.out, res); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Fprintln(stdout)
	bench.WriteText(stdout, res)
	fmt.Fprintln(stdout, "\nfaster mode (throughput):")
	for _, w := range bench.Winners(res) {
		fmt.Fprintln(stdout, "  "+w)
	}
	for _, sr := range res.Switch {
		fmt.Fprintf(stdout, "\nmode switch (repeat %d): %s\n", sr.Repeat, bench.SwitchSummary(sr))
	}
	fmt.Fprintf(stdout, "\nreport: %s/report.md, results.json, charts (*.png, *.svg)\n", c.out)
	if runErr != nil {
		return fmt.Errorf("stopped early (%w); the report holds what was measured", runErr)
	}
	return nil
}

// bindBenchLoadgen is 'shoal bench loadgen': the coupling experiment's
// load generator, in its own process.
func bindBenchLoadgen(*cli.Set) runFunc {
	return func(ctx context.Context, sio stdio, _ []string) error {
		return bench.ServeLoadgen(ctx, sio.in, sio.out)
	}
}

func bindBenchCompare(*cli.Set) runFunc {
	return func(_ context.Context, sio stdio, args []string) error { return runBenchCompare(args, sio.out) }
}

// runBenchCompare is 'shoal bench compare A B'.
func runBenchCompare(args []string, stdout io.Writer) error {
	a, err := bench.ReadResults(args[0])
	if err != nil {
		return err
	}
	b, err := bench.ReadResults(args[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "A: %s (%s, %s)\nB: %s (%s, %s)\n\n", args[0], a.Manifest.Commit, a.Manifest.Started.Format("2006-01-02 15:04"),
		args[1], b.Manifest.Commit, b.Manifest.Started.Format("2006-01-02 15:04"))
	return bench.Compare(stdout, a, b)
}
