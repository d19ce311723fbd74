package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/bench"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/cli"
)

func init() {
	register(
		&command{name: "bench detect", bind: bindBenchDetect,
			summary: "SIGKILL a node of a local cluster and time until every other node marks it failed (loopback and LAN presets)."},
		&command{name: "bench failover", bind: bindBenchFailover,
			summary: "SIGKILL the raft leader while writing through a follower and time until the first write acknowledged after the kill."},
		&command{name: "bench idle", args: "[-- NODE-FLAGS]", max: -1, bind: bindBenchIdle,
			summary: "Watch an idle local cluster, optionally beside CPU burners ('yes' per core): raft term growth, leader changes and each node's CPU time."},
		&command{name: "bench clones", bind: bindBenchClones,
			summary: "A storm of concurrent git clones: pack cache off, cold, warm, and git http-backend (net/http/cgi) as the baseline."},
		&command{name: "bench coupling", bind: bindBenchCoupling,
			summary: "The L2 cache's LOCAL and DISTRIBUTED modes across cluster sizes under a REST workload (bench/experiments/*.yaml); writes results.json, report.md and charts."},
		&command{name: "bench compare", args: "A B", min: 2, max: 2, bind: bindBenchCompare,
			summary: "Ratios of two coupling results (B/A): results.json files or the directories holding them."},
		&command{name: "bench loadgen", bind: bindBenchLoadgen,
			summary: "The coupling experiment's load generator (started by coupling): spec on stdin, events on stdout."},
	)
}

func bindBenchDetect(s *cli.Set) runFunc {
	n, trials := 3, 5
	var presets []string
	var dir string
	encrypt := "off"
	s.Int(&n, "n", "cluster size")
	s.List(&presets, "preset", "presets to compare, repeatable: loopback, lan (default both)")
	s.Int(&trials, "trials", "clusters started and timed per preset")
	s.String(&dir, "dir", "scratch directory (default a temporary one, removed afterwards)")
	s.String(&encrypt, "encrypt", "gossip encryption: off, on (a fresh gossip key per cluster), or both (alternating, trial by trial, so that both see the same machine)")
	return func(ctx context.Context, sio stdio, _ []string) error {
		return runBenchDetect(ctx, sio.out, n, trials, presets, dir, encrypt)
	}
}

func runBenchDetect(ctx context.Context, stdout io.Writer, n, trials int, presets []string, dir, encrypt string) error {
	if len(presets) == 0 {
		presets = []string{"loopback", "lan"}
	}
	for _, p := range presets {
		if p != "loopback" && p != "lan" {
			return usagef("--preset %q: want loopback or lan", p)
		}
	}
	variants := map[string][]bool{"off": {false}, "on": {true}, "both": {false, true}}[encrypt]
	if variants == nil {
		return usagef("--encrypt %q: want off, on or both", encrypt)
	}
	if n < 2 || trials < 1 {
		return usagef("need -n ≥ 2 and --trials ≥ 1")
	}
	exe, cleanup, err := benchScratch(&dir)
	if err != nil {
		return err
	}
	defer cleanup()
	var results []*bench.Result
	for _, p := range presets {
		fmt.Fprintf(stdout, "preset %s: %d trials of %d nodes\n", p, trials, n)
		byVariant := make([]*bench.Result, len(variants))
		for t := 1; t <= trials; t++ {
			for vi, enc := range variants {
				key := ""
				if enc {
					k, err := cluster.GenerateGossipKey()
					if err != nil {
						return err
					}
					key = cluster.EncodeGossipKey(k)
				}
				r, err := bench.Detect(ctx, bench.Options{
					Binary: exe, N: n, Preset: p, Trials: 1, FirstTrial: t, Dir: dir, GossipKey: key,
					Progress: func(t int, d time.Duration) {
						fmt.Fprintf(stdout, "  trial %d%s: %v\n", t, map[bool]string{true: " (encrypted)"}[enc], d.Round(time.Millisecond))
					},
				})
				if err != nil {
					return err
				}
				if byVariant[vi] == nil {
					byVariant[vi] = r
				} else {
					byVariant[vi].Samples = append(byVariant[vi].Samples, r.Samples...)
				}
			}
		}
		results = append(results, byVariant...)
	}
	label := func(r *bench.Result) string {
		if r.Encrypted {
			return r.Preset + ", encrypted"
		}
		return r.Preset
	}
	fmt.Fprintf(stdout, "\nfailure detection, SIGKILL to every other node reporting 'failed' (%d nodes):\n", n)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PRESET\tTRIALS\tMIN\tMEDIAN\tMAX")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\n", label(r), len(r.Samples), r.Quantile(0).Round(time.Millisecond),
			r.Quantile(0.5).Round(time.Millisecond), r.Quantile(1).Round(time.Millisecond))
	}
	ratio := func(a, b *bench.Result) {
		fmt.Fprintf(tw, "ratio %s / %s (median)\t\t\t%.2f\t\n", label(a), label(b), float64(a.Quantile(0.5))/float64(b.Quantile(0.5)))
	}
	switch {
	case len(variants) == 2:
		for i := 0; i+1 < len(results); i += 2 {
			ratio(results[i+1], results[i])
		}
	case len(results) == 2:
		ratio(results[0], results[1])
	}
	return tw.Flush()
}

func bindBenchFailover(s *cli.Set) runFunc {
	n, trials, preset := 3, 5, "loopback"
	var dir string
	s.Int(&n, "n", "cluster size")
	s.String(&preset, "preset", "node tuning: loopback or lan")
	s.Int(&trials, "trials", "clusters started, one leader killed in each")
	s.String(&dir, "dir", "scratch directory (default a temporary one, removed afterwards)")
	return func(ctx context.Context, sio stdio, _ []string) error {
		return runBenchFailover(ctx, sio.out, n, trials, preset, dir)
	}
}

func runBenchFailover(ctx context.Context, stdout io.Writer, n, trials int, preset, dir string) error {
	if preset != "loopback" && preset != "lan" {
		return usagef("--preset %q: want loopback or lan", preset)
	}
	if n < 3 || trials < 1 {
		return usagef("need -n ≥ 3 and --trials ≥ 1")
	}
	exe, cleanup, err := benchScratch(&dir)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(stdout, "leader failover, %s preset: %d trials of %d nodes\n", preset, trials, n)
	r, err := bench.Failover(ctx, bench.Options{
		Binary: exe, N: n, Preset: preset, Trials: trials, Dir: dir,
		Progress: func(t int, d time.Duration) { fmt.Fprintf(stdout, "  trial %d: %v\n", t, d.Round(time.Millisecond)) },
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nSIGKILL of the leader to the first acknowledged write: min %v, median %v, max %v\n",
		r.Quantile(0).Round(time.Millisecond), r.Quantile(0.5).Round(time.Millisecond), r.Quantile(1).Round(time.Millisecond))
	return nil
}

func bindBenchIdle(s *cli.Set) runFunc {
	o := bench.IdleOptions{N: 3, Preset: "loopback", Duration: 2 * time.Minute, Burners: runtime.NumCPU(), Sample: 2 * time.Second, ProfileNode: 1}
	s.Int(&o.N, "n", "cluster size")
	s.String(&o.Preset, "preset", "node tuning: loopback or lan")
	s.Duration(&o.Duration, "duration", "how long to watch the idle cluster")
	s.Int(&o.Burners, "burners", "CPU burners ('yes > /dev/null') run beside the cluster (default one per core; 0: none)")
	s.Duration(&o.Sample, "sample", "interval between looks at every node's raft term and leader")
	s.String(&o.Dir, "dir", "scratch directory (default a temporary one, removed afterwards)")
	var profile string
	s.String(&profile, "profile", "write a CPU profile of one node over the watched duration to this file (go tool pprof reads it)")
	s.Int(&o.ProfileNode, "profile-node", "the node --profile profiles (1 to -n)")
	return func(ctx context.Context, sio stdio, args []string) error {
		if o.ProfileNode < 1 || o.ProfileNode > o.N {
			return usagef("--profile-node %d: want 1 to %d", o.ProfileNode, o.N)
		}
		if profile != "" {
			f, err := os.Create(profile)
			if err != nil {
				return err
			}
			defer f.Close()
			o.Profile = f
		}
		if o.Preset != "loopback" && o.Preset != "lan" {
			return usagef("--preset %q: want loopback or lan", o.Preset)
		}
		if o.N < 1 || o.Burners < 0 || o.Duration <= 0 || o.Sample <= 0 {
			return usagef("need -n ≥ 1, --burners ≥ 0, and positive --duration and --sample")
		}
		exe, cleanup, err := benchScratch(&o.Dir)
		if err != nil {
			return err
		}
		defer cleanup()
		o.Binary, o.Args = exe, args
		stdout := sio.out
		fmt.Fprintf(stdout, "idle %d-node cluster, %s preset, %d CPU burners, watched for %v\n", o.N, o.Preset, o.Burners, o.Duration)
		last := time.Duration(0)
		o.Progress = func(e time.Duration, term uint64, leader string) {
			if e-last >= 30*time.Second {
				last = e
				fmt.Fprintf(stdout, "  %v: term %d, leader %q\n", e.Round(time.Second), term, leader)
			}
		}
		r, err := bench.Idle(ctx, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nraft term %d -> %d (+%d) in %v; leader changes %d; of %d samples, %d without a leader and %d with a member not alive\n",
			r.FirstTerm, r.LastTerm, r.TermGrowth(), r.Duration.Round(time.Second), r.LeaderChanges, r.Samples, r.Leaderless, r.NotAlive)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tCPU\t% OF A CORE\tWAKE-UPS/S")
		for i := 1; i <= o.N; i++ {
			name := fmt.Sprintf("node%d", i)
			if pct := r.CPUPercent(name); pct >= 0 {
				label := name
				if name == r.Leader {
					label += " (L)"
				}
				fmt.Fprintf(tw, "%s\t%v\t%.2f\t%.0f\n", label, r.CPU[name], pct, r.WakeupsPerSecond(name))
			}
		}
		return tw.Flush()
	}
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
