package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/bench/chaos"
	"github.com/shoal-dev/shoal/internal/cli"
)

func init() {
	register(&command{name: "bench chaos", bind: bindBenchChaos,
		summary: "The fault-injection consistency checker: real nodes under REST, kv, scheduler and git load, faults from a schedule (pauses, kills, restarts, partitions as root); exits 1 on any violation."})
}

func bindBenchChaos(s *cli.Set) runFunc {
	profile, partitions, dir, out := "short", "auto", "", ""
	nodes := 3
	var settings, faults []string
	var seed int64
	noGit := false
	cacheMode, preset := "", "loopback"
	postgres := false
	var nodeArgs []string
	s.String(&profile, "profile", "schedule: "+strings.Join(chaos.ProfileNames(), " or ")+" (short: about 4 minutes; long: 15-30 minutes)")
	s.List(&settings, "setting", "settings to run, repeatable ("+strings.Join(chaos.SettingNames(), ", ")+"; default the profile's)")
	s.List(&faults, "fault", "replace the profile's schedule: KIND:HOLD, repeatable, in order ("+strings.Join(chaos.FaultKinds(), ", ")+")")
	s.String(&cacheMode, "cache-mode", "run only the settings of this cache mode: local, distributed or near")
	s.Int(&nodes, "n", "cluster size")
	s.String(&partitions, "partitions", "network partitions in namespaces: auto (when root with ip and nft), on, or off")
	s.String(&preset, "preset", "the nodes' timing: loopback (one machine) or lan (several machines)")
	s.Bool(&postgres, "postgres", "the nodes share a PostgreSQL server (installed here: Debian's postgresql), in a namespace of its own with partitions, instead of a SQLite file")
	s.List(&nodeArgs, "node-arg", "an extra flag for every node, repeatable (--node-arg=--voters --node-arg=5)")
	s.Bool(&noGit, "no-git", "leave out the git pushes and ref checks")
	s.Int64(&seed, "seed", "random seed of the schedule's choices and the load (0: from the clock)")
	s.String(&dir, "dir", "scratch directory for the clusters (default a temporary one, removed afterwards)")
	s.String(&out, "out", "also write the report as JSON to this file")
	render := ""
	s.String(&render, "markdown-from", "print the Markdown tables (RELIABILITY.md's) of a JSON report written by --out, and exit")
	return func(ctx context.Context, sio stdio, _ []string) error {
		if render != "" {
			b, err := os.ReadFile(render)
			if err != nil {
				return err
			}
			var rep chaos.Report
			if err := json.Unmarshal(b, &rep); err != nil {
				return fmt.Errorf("%s: %w", render, err)
			}
			chaos.WriteMarkdown(sio.out, &rep)
			return nil
		}
		p, ok := chaos.Profiles[profile]
		if !ok {
			return usagef("--profile %q: want %s", profile, strings.Join(chaos.ProfileNames(), " or "))
		}
		if len(settings) > 0 {
			p.Settings = settings
		}
		if cacheMode != "" {
			var keep []string
			for _, name := range p.Settings {
				if st, ok := chaos.SettingByName(name); ok && st.CacheMode == cacheMode {
					keep = append(keep, name)
				}
			}
			if len(keep) == 0 {
				for _, st := range chaos.Settings {
					if st.CacheMode == cacheMode {
						keep = append(keep, st.Name)
					}
				}
			}
			if len(keep) == 0 {
				return usagef("--cache-mode %q: want local, distributed or near", cacheMode)
			}
			p.Settings = keep
		}
		for _, name := range p.Settings {
			if _, ok := chaos.SettingByName(name); !ok {
				return usagef("--setting %q: want one of %s", name, strings.Join(chaos.SettingNames(), ", "))
			}
		}
		if partitions != "auto" && partitions != "on" && partitions != "off" {
			return usagef("--partitions %q: want auto, on or off", partitions)
		}
		if preset != "loopback" && preset != "lan" {
			return usagef("--preset %q: want loopback or lan", preset)
		}
		if nodes < 3 || nodes > 9 {
			return usagef("-n %d: want 3 to 9", nodes)
		}
		if len(faults) > 0 {
			p.Faults = nil
			for _, f := range faults {
				kind, hold, ok := strings.Cut(f, ":")
				d, err := time.ParseDuration(hold)
				if !ok || err != nil || d < 0 {
					return usagef("--fault %q: want KIND:HOLD, as pause:3s", f)
				}
				if !slices.Contains(chaos.FaultKinds(), kind) {
					return usagef("--fault %q: kinds are %s", f, strings.Join(chaos.FaultKinds(), ", "))
				}
				p.Faults = append(p.Faults, chaos.Fault{Kind: chaos.FaultKind(kind), Hold: d})
			}
		}
		if noGit {
			p.Git = false
		}
		exe, cleanup, err := benchScratch(&dir)
		if err != nil {
			return err
		}
		keep := false
		defer func() {
			if keep {
				fmt.Fprintf(sio.err, "the clusters' directories (node logs) are kept in %s\n", dir)
				return
			}
			cleanup()
		}()
		rep, runErr := chaos.Run(ctx, chaos.Config{Binary: exe, Dir: dir, Nodes: nodes, Profile: p, Partitions: partitions,
			Seed: uint64(seed), Log: sio.err, Preset: preset, Postgres: postgres, ExtraArgs: nodeArgs})
		if rep != nil {
			chaos.WriteText(sio.out, rep)
			if out != "" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err == nil {
					err = os.WriteFile(out, append(b, '\n'), 0o644)
				}
				if err != nil {
					return err
				}
			}
		}
		keep = runErr != nil || rep.Violations() > 0
		if runErr != nil {
			return fmt.Errorf("the run stopped: %w", runErr)
		}
		if n := rep.Violations(); n > 0 {
			return fmt.Errorf("%d violation(s)", n)
		}
		return nil
	}
}
