package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/bench"
)

func runBench(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" {
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	switch args[0] {
	case "detect":
		return runBenchDetect(args[1:], stdout, stderr)
	case "failover":
		return runBenchFailover(args[1:], stdout, stderr)
	case "clones":
		return runBenchClones(args[1:], stdout, stderr)
	case "coupling":
		return runBenchCoupling(args[1:], stdout, stderr)
	case "loadgen":
		return runBenchLoadgen(args[1:], stdout, stderr)
	case "compare":
		return runBenchCompare(args[1:], stdout, stderr)
	}
	return usagef("bench: unknown experiment %q\n%s", args[0], benchUsage)
}

const benchUsage = `usage: shoal bench <experiment> [flags]

experiments:
  detect   SIGKILL a node of a local cluster and time until every other
           node marks it failed (loopback and LAN presets)
  failover SIGKILL the raft leader while writing through a follower and
           time until the first write acknowledged after the kill
  clones   a storm of concurrent git clones: pack cache off, cold, warm,
           and git http-backend (net/http/cgi) as the baseline
  coupling the L2 cache's LOCAL and DISTRIBUTED modes across cluster sizes
           under a REST workload (bench/experiments/*.yaml); writes
           results.json, report.md and charts
  compare  shoal bench compare A B: ratios of two coupling results (B/A)
  loadgen  the coupling experiment's load generator (started by coupling)
`

func runBenchDetect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench detect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 3, "cluster size")
	presets := listFlag{}
	fs.Var(&presets, "preset", "presets to compare, repeatable: loopback, lan (default both)")
	trials := fs.Int("trials", 5, "clusters started and timed per preset")
	dir := fs.String("dir", "", "scratch directory (default a temporary one, removed afterwards)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(presets) == 0 {
		presets = listFlag{"loopback", "lan"}
	}
	for _, p := range presets {
		if p != "loopback" && p != "lan" {
			return usagef("--preset %q: want loopback or lan", p)
		}
	}
	if *n < 2 || *trials < 1 {
		return usagef("need -n ≥ 2 and --trials ≥ 1")
	}
	exe, cleanup, err := benchScratch(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var results []*bench.Result
	for _, p := range presets {
		fmt.Fprintf(stdout, "preset %s: %d trials of %d nodes\n", p, *trials, *n)
		r, err := bench.Detect(ctx, bench.Options{
			Binary: exe, N: *n, Preset: p, Trials: *trials, Dir: *dir,
			Progress: func(t int, d time.Duration) { fmt.Fprintf(stdout, "  trial %d: %v\n", t, d.Round(time.Millisecond)) },
		})
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Fprintf(stdout, "\nfailure detection, SIGKILL to every other node reporting 'failed' (%d nodes):\n", *n)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PRESET\tTRIALS\tMIN\tMEDIAN\tMAX")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\n", r.Preset, len(r.Samples), r.Quantile(0).Round(time.Millisecond),
			r.Quantile(0.5).Round(time.Millisecond), r.Quantile(1).Round(time.Millisecond))
	}
	if len(results) == 2 {
		fmt.Fprintf(tw, "ratio %s/%s (median)\t\t\t%.2f\t\n", results[0].Preset, results[1].Preset,
			float64(results[0].Quantile(0.5))/float64(results[1].Quantile(0.5)))
	}
	return tw.Flush()
}

func runBenchFailover(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 3, "cluster size")
	preset := fs.String("preset", "loopback", "node tuning: loopback or lan")
	trials := fs.Int("trials", 5, "clusters started, one leader killed in each")
	dir := fs.String("dir", "", "scratch directory (default a temporary one, removed afterwards)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *preset != "loopback" && *preset != "lan" {
		return usagef("--preset %q: want loopback or lan", *preset)
	}
	if *n < 3 || *trials < 1 {
		return usagef("need -n ≥ 3 and --trials ≥ 1")
	}
	exe, cleanup, err := benchScratch(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "leader failover, %s preset: %d trials of %d nodes\n", *preset, *trials, *n)
	r, err := bench.Failover(ctx, bench.Options{
		Binary: exe, N: *n, Preset: *preset, Trials: *trials, Dir: *dir,
		Progress: func(t int, d time.Duration) { fmt.Fprintf(stdout, "  trial %d: %v\n", t, d.Round(time.Millisecond)) },
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nSIGKILL of the leader to the first acknowledged write: min %v, median %v, max %v\n",
		r.Quantile(0).Round(time.Millisecond), r.Quantile(0.5).Round(time.Millisecond), r.Quantile(1).Round(time.Millisecond))
	return nil
}

// benchScratch finds this binary (the experiments run it as their nodes)
// and, if *dir is empty, makes a temporary directory that cleanup removes.
func benchScratch(dir *string) (exe string, cleanup func(), err error) {
	if exe, err = os.Executable(); err != nil {
		return "", nil, err
	}
	cleanup = func() {}
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "shoal-bench-")
		if err != nil {
			return "", nil, err
		}
		*dir, cleanup = tmp, func() { os.RemoveAll(tmp) }
	}
	return exe, cleanup, nil
}
