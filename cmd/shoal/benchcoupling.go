package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-dev/shoal/bench"
)

// runBenchCoupling is 'shoal bench coupling': the LOCAL vs DISTRIBUTED
// experiment. Ctrl-C stops it and still writes the stages it completed.
func runBenchCoupling(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench coupling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	expFile := fs.String("experiment", "bench/experiments/default.yaml", "experiment file (YAML): arms, stages, mix, data set")
	out := fs.String("out", "coupling-results", "directory for results.json, report.md and the charts")
	dir := fs.String("dir", "", "scratch directory for databases and node directories (default a temporary one, removed afterwards)")
	inProcess := fs.Bool("in-process", false, "run the nodes inside this process (a quick look; they share its CPU)")
	loadgenInProcess := fs.Bool("loadgen-in-process", false, "run the load generator inside this process instead of its own")
	repeat := fs.Int("repeat", 1, "run the whole experiment this many times, to show run-to-run spread")
	quiet := fs.Bool("no-progress", false, "no progress bar")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *repeat < 1 || *repeat > 20 {
		return usagef("--repeat %d: want 1 to 20", *repeat)
	}
	if *out == "" {
		return usagef("--out must not be empty")
	}
	exp, raw, err := bench.LoadExperiment(*expFile)
	if err != nil {
		return usagef("--experiment %v", err)
	}
	exe, cleanup, err := benchScratch(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := bench.CouplingOptions{Experiment: exp, ExperimentFile: string(raw), Binary: exe, InProcess: *inProcess,
		LoadgenInProcess: *loadgenInProcess, Dir: *dir, Repeat: *repeat}
	if !*quiet {
		o.Progress = stderr
	}
	fmt.Fprintf(stdout, "coupling experiment %q: %d arms × %d stages, %d repeat(s); nodes %s\n", exp.Name, len(exp.Arms()),
		len(exp.Stages.Clients), *repeat, map[bool]string{true: "in process", false: "as processes"}[*inProcess])
	res, runErr := bench.Coupling(ctx, o)
	if res == nil || len(res.Runs) == 0 {
		return runErr
	}
	if err := bench.WriteReport(*out, res); err != nil {
		return errors.Join(runErr, err)
	}
	fmt.Fprintln(stdout)
	bench.WriteText(stdout, res)
	fmt.Fprintln(stdout, "\nfaster mode (throughput):")
	for _, w := range bench.Winners(res) {
		fmt.Fprintln(stdout, "  "+w)
	}
	fmt.Fprintf(stdout, "\nreport: %s/report.md, results.json, charts (*.png, *.svg)\n", *out)
	if runErr != nil {
		return fmt.Errorf("stopped early (%w); the report holds what was measured", runErr)
	}
	return nil
}

// runBenchLoadgen is 'shoal bench loadgen': the coupling experiment's
// load generator, in its own process; spec on stdin, events on stdout.
func runBenchLoadgen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench.ServeLoadgen(ctx, os.Stdin, stdout)
}

// runBenchCompare is 'shoal bench compare A B'.
func runBenchCompare(args []string, stdout, _ io.Writer) error {
	if len(args) != 2 {
		return usagef("usage: shoal bench compare A B (results.json files or the directories holding them)")
	}
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
