package bench

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteReport writes results.json, report.md and the charts (PNG and
// SVG) into dir.
func WriteReport(dir string, r *CouplingResults) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	charts, err := WriteCharts(dir, r)
	if err != nil {
		return fmt.Errorf("charts: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "report.md"))
	if err != nil {
		return err
	}
	WriteMarkdown(f, r, charts)
	return f.Close()
}

// ReadResults reads a results.json (or the directory holding one).
func ReadResults(path string) (*CouplingResults, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "results.json")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r CouplingResults
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(r.Runs) == 0 {
		return nil, fmt.Errorf("%s: no runs in it", path)
	}
	return &r, nil
}

// WriteMarkdown writes the report's tables.
func WriteMarkdown(w io.Writer, r *CouplingResults, charts []string) {
	m := r.Manifest
	e := m.Experiment
	fmt.Fprintf(w, "# Coupling experiment %q\n\n", e.Name)
	if m.Interrupted {
		fmt.Fprintf(w, "**Interrupted** (%s): the tables hold the stages that completed.\n\n", m.Error)
	}
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	for _, kv := range [][2]string{
		{"commit", m.Commit}, {"Go", m.GoVersion}, {"GOMAXPROCS / CPUs", fmt.Sprintf("%d / %d", m.GOMAXPROCS, m.NumCPU)},
		{"CPU", m.CPUModel}, {"nodes", m.Nodes + " on loopback"}, {"node GOMAXPROCS", nodeProcsString(m)},
		{"database", cmp.Or(m.Database, "SQLite, a copy of the seeded file per arm")}, {"load generator", m.Loadgen},
		{"CPUs", cmp.Or(m.Pinning, "every process on every CPU")},
		{"started", m.Started.Format(time.RFC3339)}, {"took", m.Finished.Sub(m.Started).Round(time.Second).String()},
		{"repeats", fmt.Sprint(m.Repeat)}, {"warm-up arm", map[bool]string{true: "the first stage of the first arm, run once before repeat 1 and discarded", false: "none"}[m.WarmupArm]},
		{"arm order", cmp.Or(m.ArmOrder, "the experiment's, in every repeat")},
		{"data", fmt.Sprintf("%d projects, %d repositories, %d pull requests, %d comments, %d users", m.Data.Projects,
			m.Data.Repositories, m.Data.PullRequests, m.Data.Comments, m.Data.Users)},
		{"stages", fmt.Sprintf("clients %v, %v each after %v warm-up", e.Stages.Clients, e.Stages.Duration.D(), e.Stages.Warmup.D())},
		{"mix", mixString(e.Mix)}, {"keys", fmt.Sprintf("Zipf s=%g, seed %d", e.Zipf, e.Seed)},
		{"invalidation / backups", fmt.Sprintf("%s / %d", e.Invalidation, *e.Backups)},
		{"quiet guard", quietString(e.Quiet)},
		{"switch stage", switchString(e.Switch)},
	} {
		fmt.Fprintf(w, "| %s | %s |\n", kv[0], kv[1])
	}
	fmt.Fprintf(w, "\n## Summary (all operations; mean of %d repeat(s))\n\n", m.Repeat)
	writeSummary(w, r)
	if m.Database != "" {
		writeDBCPU(w, r)
	}
	writeNearRatios(w, r)
	fmt.Fprintf(w, "\n## Faster mode by throughput (even: within %.0f%%)\n\n", 100*(TieBand-1))
	for _, line := range Winners(r) {
		fmt.Fprintf(w, "- %s\n", line)
	}
	fmt.Fprintf(w, "\n## Misses and drops by cause (repeat 1, summed over the nodes)\n\n")
	writeCauses(w, r)
	fmt.Fprintf(w, "\n## Writes: the cache's part, and the owners' waits (ms, all repeats)\n\n")
	writeWaits(w, r)
	fmt.Fprintf(w, "\n## Spread over repeats, and the machine's other load\n\n")
	writeSpread(w, r)
	fmt.Fprintf(w, "\n## Peak RSS per node (MiB, last repeat)\n\n")
	writeRSS(w, r)
	fmt.Fprintf(w, "\n## Per operation (repeat 1)\n\n")
	writeOps(w, r)
	writeSwitch(w, r)
	if len(charts) > 0 {
		fmt.Fprintf(w, "\n## Charts\n\n")
		for _, c := range charts {
			fmt.Fprintf(w, "![%s](%s)\n\n", strings.TrimSuffix(c, ".png"), c)
		}
	}
	fmt.Fprintf(w, "\n## Experiment file\n\n```yaml\n%s\n```\n", strings.TrimSpace(m.ExperimentFile))
}

func switchString(s *SwitchStage) string {
	if s == nil {
		return "none"
	}
	return fmt.Sprintf("%d nodes, %d clients, %s, a switch every %v, %v buckets after %v warm-up", s.Nodes, s.Clients,
		strings.Join(s.Modes, " → "), s.Every.D(), s.Bucket.D(), s.Warmup.D())
}

func quietString(q Quiet) string {
	if q.MaxOtherCPU <= 0 {
		return "off"
	}
	return fmt.Sprintf("a stage in which other processes used over %.0f%% of the machine is run again, up to %d times; the least disturbed attempt is kept",
		100*q.MaxOtherCPU, q.Retries)
}

func mixString(mix map[string]int) string {
	var parts []string
	for _, op := range Ops {
		if mix[op] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", op, mix[op]))
		}
	}
	return strings.Join(parts, ", ")
}

// SummaryHeader and summaryRow are the summary table, shared with
// BENCHMARKS.md.
const summaryHeader = "| arm | clients | ops/s | p50 ms | p99 ms | p99.9 ms | errors | hit ratio | remote calls/get | msgs/op | socket B/op | L2 B/op | node CPU ms/op | node CPU | loadgen CPU | other CPU | near hits | lag p50/p99 ms |\n" +
	"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"

func writeSummary(w io.Writer, r *CouplingResults) {
	fmt.Fprint(w, summaryHeader)
	for _, s := range r.Series() {
		for i, sts := range s.Stages {
			f := func(g func(StageResult) float64) float64 { return stageMean(sts, g) }
			fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %.0f | %.3f | %.2f | %.2f | %s | %.0f | %.2f | %.0f%% | %.0f%% | %.0f%% | %s | %.2f / %.2f |\n",
				s.Arm.Name(), s.Clients[i],
				f(func(x StageResult) float64 { return x.Total.OpsPerSec }),
				f(func(x StageResult) float64 { return x.Total.P50Ms }),
				f(func(x StageResult) float64 { return x.Total.P99Ms }),
				f(func(x StageResult) float64 { return x.Total.P999Ms }),
				f(func(x StageResult) float64 { return float64(x.Total.Errors) }),
				f(func(x StageResult) float64 { return x.Cache.HitRatio }),
				f(func(x StageResult) float64 { return x.Cache.RemoteCallsPerGet }),
				f(func(x StageResult) float64 { return x.Traffic.MessagesPerOp }),
				socketBytes(sts),
				f(func(x StageResult) float64 { return x.Traffic.L2BytesPerOp }),
				f(func(x StageResult) float64 { return x.CPU.NodesMsPerOp }),
				100*f(func(x StageResult) float64 { return x.CPU.NodesShare }),
				100*f(func(x StageResult) float64 { return x.CPU.LoadgenShare }),
				100*f(func(x StageResult) float64 { return x.CPU.OthersShare }),
				nearHits(s.Arm, sts),
				f(func(x StageResult) float64 { return x.Lag.P50Ms }),
				f(func(x StageResult) float64 { return x.Lag.P99Ms }))
		}
	}
	fmt.Fprint(w, "\nnode CPU (the node processes' own), loadgen CPU and other CPU are shares of the whole machine (all CPUs) in the measured window; "+
		"other CPU is what the benchmark's own processes (this runner, the nodes with the git processes they ran, the load generator) and the kernel's interrupt work did not use: a shared machine's noise; "+
		"socket B/op is the kernel's count of bytes on the peer RPC connections, both directions; "+
		"L2 B/op the L2 cache's own count of its remote calls' bytes; msgs/op counts peer RPC requests and one-way notes; "+
		"near hits is the share of cache gets a NEAR node answered from its own near copy.\n")
}

// writeDBCPU is the CPU the shared database server spent per operation
// (CPUFigs.DBMsPerOp), beside the nodes': with PostgreSQL every cache
// miss a node loads is a query to another process.
func writeDBCPU(w io.Writer, r *CouplingResults) {
	fmt.Fprintf(w, "\n| arm | clients | database CPU ms/op | node CPU ms/op | both |\n|---|---:|---:|---:|---:|\n")
	for _, s := range r.Series() {
		for i, sts := range s.Stages {
			db := stageMean(sts, func(x StageResult) float64 { return x.CPU.DBMsPerOp })
			nodes := stageMean(sts, func(x StageResult) float64 { return x.CPU.NodesMsPerOp })
			fmt.Fprintf(w, "| %s | %d | %.2f | %.2f | %.2f |\n", s.Arm.Name(), s.Clients[i], db, nodes, db+nodes)
		}
	}
	fmt.Fprintf(w, "\ndatabase CPU is the PostgreSQL server's (its postmaster, backends and workers), counted in the benchmark's own CPU, not in the nodes'.\n")
}

// nearHits is the share of gets answered from near copies (NEAR arms).
func nearHits(a Arm, sts []StageResult) string {
	if a.Mode != "near" {
		return "-"
	}
	return fmt.Sprintf("%.3f", stageMean(sts, func(x StageResult) float64 {
		if g := x.Cache.Hits + x.Cache.Misses; g > 0 {
			return float64(x.Cache.NearHits) / float64(g)
		}
		return 0
	}))
}

// writeCauses is, per arm and stage, why gets missed: at the owner (or
// read through), and for NEAR why a near copy did not answer and what
// dropped copies wholesale — the counts, per 1,000 gets.
func writeCauses(w io.Writer, r *CouplingResults) {
	fmt.Fprint(w, "| arm | clients | gets | owner misses per 1,000 gets | near misses per 1,000 gets | near drops (events) | misses per 1,000 gets by region | missed clears / resets / exclusions | remote calls per 1,000 ops |\n|---|---:|---:|---|---|---|---|---|---|\n")
	for _, ar := range r.Runs[0] {
		for _, st := range ar.Stages {
			gets := st.Cache.Hits + st.Cache.Misses
			fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %d / %d / %d | %s |\n", ar.Arm.Name(), st.Clients, gets,
				causesString(st.Cache.OwnerMisses, gets), causesString(st.Cache.NearMisses, gets), causesString(st.Cache.NearDrops, 0),
				causesString(st.Cache.RegionMisses, gets),
				st.Cache.MissedClears, st.Cache.Resets, st.Cache.Exclusions, causesString(st.Cache.RemoteByKind, uint64(st.Total.Count)))
		}
	}
	fmt.Fprint(w, "\nOwner misses: absent (never put), key (invalidated, not put again), locked, spaces (a query result's tables written), region (cleared), partition (a new owner's or a reset copy), read_through_* (no ticket: the owner could not answer or be reached). "+
		"Near misses: lease (none valid), cold (never kept here), key (the owner's change message), partition (a sequence gap or new owner), node (every copy dropped), region, spaces. "+
		"Misses by region: every get that missed (and loaded or read through), by the region it read. "+
		"Near drops: wholesale drops of copies by event, and copies not kept (keep_owner, keep_changed, keep_locked). "+
		"Remote calls: to owners (get, put, change), to backups (repl), to near holders (near), query-space updates straight to every member (spaces).\n")
}

// writeWaits is, per arm and stage, how long the writes' cache work took
// on the writers (lock, change, spaces) and how long the owners waited
// for their backups and the keys' near holders: p50 / p99 in ms, and
// the count per 1,000 operations, over every repeat.
func writeWaits(w io.Writer, r *CouplingResults) {
	fmt.Fprint(w, "| arm | clients | lock | change | spaces | owner: backups | owner: near holders |\n|---|---:|---|---|---|---|---|\n")
	cell := func(m map[string]WaitFigs, k string, ops uint64) string {
		f, ok := m[k]
		if !ok || f.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f / %.2f (%.0f)", f.P50Ms, f.P99Ms, 1000*float64(f.Count)/float64(max(ops, 1)))
	}
	for _, s := range r.Series() {
		for i, sts := range s.Stages {
			var ops uint64
			for _, st := range sts {
				ops += uint64(st.Total.Count)
			}
			writes := mergeWaits(sts, func(x StageResult) map[string]WaitFigs { return x.Cache.Writes })
			owners := mergeWaits(sts, func(x StageResult) map[string]WaitFigs { return x.Cache.OwnerWaits })
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s |\n", s.Arm.Name(), s.Clients[i],
				cell(writes, "lock", ops), cell(writes, "change", ops), cell(writes, "spaces", ops),
				cell(owners, "backups", ops), cell(owners, "holders", ops))
		}
	}
	fmt.Fprint(w, "\nEach cell: p50 / p99 in ms (interpolated in log2 buckets), and in brackets how many per 1,000 operations. "+
		"Lock, change (an unlock or invalidation of a key, with the query-space update it carries) and spaces (a query-space update alone): the time a writer spent in the cache around its commit — "+
		"a broadcast in LOCAL mode (waited for with --invalidation sync), a round trip through the key's owner in DISTRIBUTED and NEAR mode. "+
		"Owner: how long a partition's owner, after sending a change, waited for its backups to apply it and for the key's near holders to drop their copies (the two overlap).\n")
}

// causesString lists the non-zero counts, largest first, per 1,000 of
// per (as counts if per is 0).
func causesString(m map[string]uint64, per uint64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "-"
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return int(m[b]) - int(m[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		if per > 0 {
			parts[i] = fmt.Sprintf("%s %.1f", k, 1000*float64(m[k])/float64(per))
		} else {
			parts[i] = fmt.Sprintf("%s %d", k, m[k])
		}
	}
	return strings.Join(parts, ", ")
}

func socketBytes(sts []StageResult) string {
	if slices.ContainsFunc(sts, func(x StageResult) bool { return x.Traffic.SocketBytes < 0 }) {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", stageMean(sts, func(x StageResult) float64 { return x.Traffic.SocketBytesPerOp }))
}

func writeSpread(w io.Writer, r *CouplingResults) {
	fmt.Fprint(w, "| arm | clients | ops/s mean | ops/s min–max | spread | p99 ms min–max | node CPU ms/op per repeat | memory ns per repeat | steal | other CPU per attempt |\n"+
		"|---|---:|---:|---:|---:|---:|---|---|---:|---|\n")
	for _, s := range r.Series() {
		for i, sts := range s.Stages {
			tp := func(x StageResult) float64 { return x.Total.OpsPerSec }
			p99 := func(x StageResult) float64 { return x.Total.P99Ms }
			m := stageMean(sts, tp)
			lo, hi := stageSpread(sts, tp)
			plo, phi := stageSpread(sts, p99)
			fmt.Fprintf(w, "| %s | %d | %.0f | %.0f–%.0f | ±%.1f%% | %.2f–%.2f | %s | %s | %.1f%% | %s |\n", s.Arm.Name(), s.Clients[i], m, lo, hi,
				100*(hi-lo)/2/max(m, 1e-9), plo, phi,
				perRepeat(sts, "%.3f", func(x StageResult) float64 { return x.CPU.NodesMsPerOp }),
				perRepeat(sts, "%.0f", func(x StageResult) float64 { return x.CPU.MemNs }),
				100*stageMean(sts, func(x StageResult) float64 { return x.CPU.StealShare }), attemptsString(sts))
		}
	}
	fmt.Fprint(w, "\nmemory ns is the runner's probe of the latency of a load from memory over each repeat's measured window (median of its samples; - where not measured, as with nodes in process). "+
		"On a shared machine a node's CPU time per operation moves with it from run to run, in every mode: compare modes within a repeat, and repeats with like memory figures. "+
		"steal is the share of the machine the hypervisor gave to other guests.\n")
}

// perRepeat lists a stage's figure in each repeat: "0.512 / 0.498".
func perRepeat(sts []StageResult, format string, f func(StageResult) float64) string {
	var reps []string
	for _, st := range sts {
		if v := f(st); v > 0 {
			reps = append(reps, fmt.Sprintf(format, v))
		} else {
			reps = append(reps, "-")
		}
	}
	return strings.Join(reps, " / ")
}

func writeRSS(w io.Writer, r *CouplingResults) {
	fmt.Fprint(w, "| arm | nodes | peak RSS per node |\n|---|---:|---|\n")
	last := r.Runs[len(r.Runs)-1]
	for _, ar := range last {
		fmt.Fprintf(w, "| %s | %d | %s |\n", ar.Arm.Name(), ar.Arm.Nodes, rssString(ar.Nodes, ar.PeakRSS))
	}
}

func writeOps(w io.Writer, r *CouplingResults) {
	fmt.Fprint(w, "| arm | clients | op | count | ops/s | mean ms | stddev ms | p50 | p90 | p99 | p99.9 | max | errors | 409s |\n"+
		"|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, ar := range r.Runs[0] {
		for _, st := range ar.Stages {
			for _, o := range append(slices.Clone(st.Ops), st.Total) {
				fmt.Fprintf(w, "| %s | %d | %s | %d | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %d |\n",
					ar.Arm.Name(), st.Clients, o.Op, o.Count, o.OpsPerSec, o.MeanMs, o.StddevMs, o.P50Ms, o.P90Ms, o.P99Ms,
					o.P999Ms, o.MaxMs, o.Errors, o.Conflicts)
			}
		}
	}
}

// WriteText prints the summary for a terminal.
func WriteText(w io.Writer, r *CouplingResults) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ARM\tCLIENTS\tOPS/S\tP99 MS\tERRORS\tHIT\tMSGS/OP\tSOCKET B/OP\tNODE CPU\tLOADGEN CPU\tOTHER CPU\t")
	for _, s := range r.Series() {
		for i, sts := range s.Stages {
			f := func(g func(StageResult) float64) float64 { return stageMean(sts, g) }
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.0f\t%.3f\t%.2f\t%s\t%.0f%%\t%.0f%%\t%.0f%%\t\n", s.Arm.Name(), s.Clients[i],
				f(func(x StageResult) float64 { return x.Total.OpsPerSec }), f(func(x StageResult) float64 { return x.Total.P99Ms }),
				f(func(x StageResult) float64 { return float64(x.Total.Errors) }), f(func(x StageResult) float64 { return x.Cache.HitRatio }),
				f(func(x StageResult) float64 { return x.Traffic.MessagesPerOp }), socketBytes(sts),
				100*f(func(x StageResult) float64 { return x.CPU.NodesShare }), 100*f(func(x StageResult) float64 { return x.CPU.LoadgenShare }),
				100*f(func(x StageResult) float64 { return x.CPU.OthersShare }))
		}
	}
	tw.Flush()
}

// Compare prints, for every arm and stage in both result sets, B's
// figures over A's (mean over repeats): above 1 means B is higher.
func Compare(w io.Writer, a, b *CouplingResults) error {
	bs := map[string]StageSeries{}
	for _, s := range b.Series() {
		bs[armKey(s.Arm)] = s
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "ARM\tCLIENTS\tOPS/S A\tOPS/S B\tB/A\tP99 B/A\tMSGS/OP B/A\tSOCKET B/OP B/A\tNODE CPU/OP B/A\t\n")
	rows := 0
	for _, sa := range a.Series() {
		sb, ok := bs[armKey(sa.Arm)]
		if !ok {
			continue
		}
		for i, stsA := range sa.Stages {
			j := slices.Index(sb.Clients, sa.Clients[i])
			if j < 0 {
				continue
			}
			stsB := sb.Stages[j]
			ratio := func(f func(StageResult) float64) string {
				x, y := stageMean(stsA, f), stageMean(stsB, f)
				if x == 0 {
					return "-"
				}
				return fmt.Sprintf("%.2f", y/x)
			}
			tp := func(x StageResult) float64 { return x.Total.OpsPerSec }
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", sa.Arm.Name(), sa.Clients[i], stageMean(stsA, tp), stageMean(stsB, tp),
				ratio(tp), ratio(func(x StageResult) float64 { return x.Total.P99Ms }),
				ratio(func(x StageResult) float64 { return x.Traffic.MessagesPerOp }),
				ratio(func(x StageResult) float64 { return max(x.Traffic.SocketBytesPerOp, 0) }),
				ratio(func(x StageResult) float64 { return x.CPU.NodesMsPerOp }))
			rows++
		}
	}
	if rows == 0 {
		return errors.New("compare: the two result sets have no arm and client count in common")
	}
	return tw.Flush()
}

// TieBand is the throughput ratio under which Winners calls two modes
// even: a one-node DISTRIBUTED cluster owns every partition and does the
// same work as LOCAL, and a shared machine moves figures by this much.
const TieBand = 1.10

// NEAR's targets (issue 19): at 3 nodes and more, NEAR's throughput is at
// least NearVsLocalTarget× LOCAL's and NearVsDistributedTarget×
// DISTRIBUTED's.
const (
	NearVsLocalTarget       = 0.9
	NearVsDistributedTarget = 1.8
)

// modeCell is one mode's figures at one cluster size and client count.
type modeCell struct {
	ok                  bool
	opsPerSec, hitRatio float64
	socketBytesPerOp    float64 // -1: unavailable
}

// modeRow is every mode's figures at one cluster size and client count.
type modeRow struct {
	nodes, clients int
	modes          map[string]modeCell
}

// modeRows groups the stages by cluster size and client count, in
// experiment order, means over repeats.
func modeRows(r *CouplingResults) []modeRow {
	var rows []modeRow
	idx := map[[2]int]int{}
	for _, s := range r.Series() {
		for i, sts := range s.Stages {
			k := [2]int{s.Arm.Nodes, s.Clients[i]}
			j, ok := idx[k]
			if !ok {
				j = len(rows)
				idx[k] = j
				rows = append(rows, modeRow{nodes: k[0], clients: k[1], modes: map[string]modeCell{}})
			}
			sock := -1.0
			if socketBytes(sts) != "n/a" {
				sock = stageMean(sts, func(x StageResult) float64 { return x.Traffic.SocketBytesPerOp })
			}
			rows[j].modes[s.Arm.Mode] = modeCell{ok: true,
				opsPerSec:        stageMean(sts, func(x StageResult) float64 { return x.Total.OpsPerSec }),
				hitRatio:         stageMean(sts, func(x StageResult) float64 { return x.Cache.HitRatio }),
				socketBytesPerOp: sock}
		}
	}
	return rows
}

// ratio is a/b, 0 when either is missing.
func ratio(a, b modeCell) float64 {
	if !a.ok || !b.ok || b.opsPerSec <= 0 {
		return 0
	}
	return a.opsPerSec / b.opsPerSec
}

// Winners says, per cluster size and client count, which mode had the
// highest throughput (mean over repeats) and by how much over the
// runner-up, e.g. "3 nodes, 8 clients: local (1.80× distributed)", or
// "even" within TieBand; with NEAR measured too, NEAR's ratios to LOCAL
// and DISTRIBUTED follow. For the report and for checking that runs agree.
func Winners(r *CouplingResults) []string {
	var out []string
	for _, row := range modeRows(r) {
		var names []string
		for _, m := range []string{"local", "distributed", "near"} {
			if row.modes[m].ok && row.modes[m].opsPerSec > 0 {
				names = append(names, m)
			}
		}
		if len(names) < 2 {
			continue
		}
		slices.SortStableFunc(names, func(a, b string) int {
			return cmpFloat(row.modes[b].opsPerSec, row.modes[a].opsPerSec)
		})
		w, ratioUp := names[0], ratio(row.modes[names[0]], row.modes[names[1]])
		line := fmt.Sprintf("%d nodes, %d clients: %s (%.2f× %s)", row.nodes, row.clients, w, ratioUp, names[1])
		if ratioUp < TieBand {
			line = fmt.Sprintf("%d nodes, %d clients: even (%s %.2f× %s)", row.nodes, row.clients, w, ratioUp, names[1])
		}
		if nl := ratio(row.modes["near"], row.modes["local"]); nl > 0 {
			line += fmt.Sprintf("; near/local %.2f×", nl)
		}
		if nd := ratio(row.modes["near"], row.modes["distributed"]); nd > 0 {
			line += fmt.Sprintf("; near/distributed %.2f×", nd)
		}
		out = append(out, line)
	}
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// writeNearRatios is the report's NEAR table: per cluster size and
// client count, the three modes' throughput, NEAR's ratios against the
// targets, hit ratios and inter-node bytes. Nothing without a NEAR arm.
func writeNearRatios(w io.Writer, r *CouplingResults) {
	rows := modeRows(r)
	if !slices.ContainsFunc(rows, func(x modeRow) bool { return x.modes["near"].ok }) {
		return
	}
	fmt.Fprintf(w, "\n## NEAR against LOCAL and DISTRIBUTED (targets at 3 nodes and more: near/local ≥ %.1f, near/distributed ≥ %.1f)\n\n",
		NearVsLocalTarget, NearVsDistributedTarget)
	fmt.Fprint(w, "| nodes | clients | local ops/s | distributed ops/s | near ops/s | near/local | near/distributed | hit ratio local / distributed / near | socket B/op local / distributed / near |\n"+
		"|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, row := range rows {
		l, d, n := row.modes["local"], row.modes["distributed"], row.modes["near"]
		if !n.ok {
			continue
		}
		fmt.Fprintf(w, "| %d | %d | %s | %s | %s | %s | %s | %s / %s / %s | %s / %s / %s |\n", row.nodes, row.clients,
			cellF(l, l.opsPerSec, "%.0f"), cellF(d, d.opsPerSec, "%.0f"), cellF(n, n.opsPerSec, "%.0f"),
			ratioCell(ratio(n, l), NearVsLocalTarget, row.nodes), ratioCell(ratio(n, d), NearVsDistributedTarget, row.nodes),
			cellF(l, l.hitRatio, "%.3f"), cellF(d, d.hitRatio, "%.3f"), cellF(n, n.hitRatio, "%.3f"),
			cellF(l, l.socketBytesPerOp, "%.0f"), cellF(d, d.socketBytesPerOp, "%.0f"), cellF(n, n.socketBytesPerOp, "%.0f"))
	}
	fmt.Fprint(w, "\nA ratio is marked ✗ where it misses its target at 3 nodes or more (the targets do not apply to one node).\n")
}

func cellF(c modeCell, v float64, format string) string {
	if !c.ok || v < 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func ratioCell(v, target float64, nodes int) string {
	switch {
	case v == 0:
		return "-"
	case nodes >= 3 && v < target:
		return fmt.Sprintf("%.2f ✗", v)
	case nodes >= 3:
		return fmt.Sprintf("%.2f ✓", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// attemptsString lists, per repeat, the other processes' share of the
// machine in each attempt at a stage: "31% | 64%, 22%".
func attemptsString(sts []StageResult) string {
	var reps []string
	for _, st := range sts {
		var a []string
		for _, v := range st.OthersShareAttempts {
			a = append(a, fmt.Sprintf("%.0f%%", 100*v))
		}
		reps = append(reps, strings.Join(a, ", "))
	}
	return strings.Join(reps, " / ")
}

// writeSwitch is the report's switch stage: per repeat, the switches,
// the window's totals and the timeline with the mode in force.
func writeSwitch(w io.Writer, r *CouplingResults) {
	if len(r.Switch) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Mode switch under load\n\n")
	for _, sr := range r.Switch {
		fmt.Fprintf(w, "### Repeat %d\n\n", sr.Repeat)
		if sr.Error != "" {
			fmt.Fprintf(w, "**Failed**: %s\n\n", sr.Error)
		}
		st := sr.Stage
		fmt.Fprintf(w, "%s. Final mode: %s. Peak RSS per node (MiB): %s. Other processes used %.0f%% of the machine, load average %.1f.\n\n",
			SwitchSummary(sr), orDash(sr.FinalMode), rssString(sr.Nodes, sr.PeakRSS), 100*st.CPU.OthersShare, st.CPU.Load1)
		fmt.Fprint(w, "| switch | via | at s | took s | epoch | result |\n|---|---|---:|---:|---:|---|\n")
		for _, ev := range sr.Switches {
			res := "ok"
			if !ev.OK() {
				res = "**" + ev.Error + "**"
			}
			if len(ev.Retried) > 0 {
				res += fmt.Sprintf(" (after %d retried answer(s), first: %s)", len(ev.Retried), ev.Retried[0])
			}
			fmt.Fprintf(w, "| %s → %s | %s | %.2f | %.2f | %d | %s |\n", ev.From, ev.To, ev.Via, ev.At, ev.Seconds, ev.Epoch, res)
		}
		fmt.Fprint(w, "\n| t s | mode | ops/s | errors | 409s | p50 ms | p99 ms | max ms |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
		for _, b := range sr.Stage.Timeline {
			fmt.Fprintf(w, "| %.1f | %s | %.0f | %d | %d | %.2f | %.2f | %.2f |\n", b.At, modeAt(sr, b), b.OpsPerSec, b.Errors, b.Conflicts,
				b.P50Ms, b.P99Ms, b.MaxMs)
		}
		fmt.Fprintln(w)
		writeWindows(w, sr.Windows)
		if len(st.Errors) > 0 {
			fmt.Fprintf(w, "First failed requests: %s\n\n", strings.Join(st.Errors, "; "))
		}
	}
	fmt.Fprint(w, "A bucket holds the operations that started in it; the mode column is the mode in force through the bucket, "+
		"or from → to where the bucket overlaps a switch under way. 409s (a concurrent writer won) are the workload's, not failures.\n")
}

// writeWindows is each mode's steady window and, where modes alternate,
// their paired ratios.
func writeWindows(w io.Writer, ws []SwitchWindow) {
	if len(ws) == 0 {
		return
	}
	fmt.Fprint(w, "Steady windows (from the switch's answer plus switch.settle to the next switch):\n\n"+
		"| window | mode | from s | to s | ops/s | errors |\n|---:|---|---:|---:|---:|---:|\n")
	for i, x := range ws {
		mode := x.Mode
		if !x.Switched {
			mode += " (switch failed)"
		}
		if x.Seconds == 0 {
			// The switch (or the settling after it) ran past the
			// window's last whole bucket: nothing of this mode to count.
			fmt.Fprintf(w, "| %d | %s | %.1f | %.1f | none: no whole bucket after the switch answered | %d |\n", i+1, mode, x.From, x.To, x.Errors)
			continue
		}
		fmt.Fprintf(w, "| %d | %s | %.1f | %.1f | %.0f | %d |\n", i+1, mode, x.From, x.To, x.OpsPerSec, x.Errors)
	}
	fmt.Fprintln(w)
	pairs := PairedRatios(ws)
	if len(pairs) == 0 {
		fmt.Fprint(w, "- No paired ratio: no two modes both have a counted window (a window that failed to switch, or that the switch ran through, is left out).\n")
	}
	for _, p := range pairs {
		lo, hi := slices.Min(p.Ratios), slices.Max(p.Ratios)
		fmt.Fprintf(w, "- %s/%s, each %s window against its neighbouring %s windows: median %.2f (%.2f–%.2f) over %d windows",
			p.A, p.B, p.A, p.B, p.Median(), lo, hi, len(p.Ratios))
		for _, t := range pairTargets[p.A+"/"+p.B] {
			fmt.Fprintf(w, "; %d of %d at or above %.1f", p.AtLeast(t), len(p.Ratios), t)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// pairTargets are issue 19's targets, shown beside the paired ratios.
var pairTargets = map[string][]float64{"near/local": {0.9}, "near/distributed": {1.8}}

// SwitchSummary is one line on a switch stage: operations, failures and
// each switch's time.
func SwitchSummary(sr SwitchRun) string {
	var parts []string
	for _, ev := range sr.Switches {
		p := fmt.Sprintf("%s→%s %.2fs", ev.From, ev.To, ev.Seconds)
		if !ev.OK() {
			p += " FAILED"
		}
		if len(ev.Retried) > 0 {
			p += fmt.Sprintf(" (%d retried answers)", len(ev.Retried))
		}
		parts = append(parts, p)
	}
	t := sr.Stage.Total
	return fmt.Sprintf("%d operations in %.1fs (%.0f ops/s, p99 %.2f ms), %d failed, %d conflicts (409); switches: %s",
		t.Count, sr.Stage.Seconds, t.OpsPerSec, t.P99Ms, t.Errors, t.Conflicts, orDash(strings.Join(parts, ", ")))
}

// modeAt is the mode in force when bucket b began: "local", or
// "local→near" during a switch.
func modeAt(sr SwitchRun, b TimelineBucket) string {
	mode := ""
	if len(sr.Switches) > 0 {
		mode = sr.Switches[0].From
	}
	for _, ev := range sr.Switches {
		switch {
		case b.At >= ev.At+ev.Seconds && ev.OK():
			mode = ev.To
		case b.At >= ev.At+ev.Seconds:
			mode = ev.From + "→" + ev.To + "?"
		case b.At+b.Seconds > ev.At:
			return ev.From + "→" + ev.To
		}
	}
	return orDash(mode)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rssString(nodes []NodePlacement, rss map[string]uint64) string {
	var parts []string
	for _, n := range nodes {
		parts = append(parts, fmt.Sprintf("%s %.0f", n.Name, float64(rss[n.Name])/(1<<20)))
	}
	return orDash(strings.Join(parts, ", "))
}

// nodeProcsString says what GOMAXPROCS the node processes ran with
// (Manifest.NodeProcs).
func nodeProcsString(m Manifest) string {
	switch m.NodeProcs {
	case "share":
		return fmt.Sprintf("each node its share of the CPUs: max(1, %d / nodes)", m.NumCPU)
	case "", "default":
		if m.Nodes == "in-process" {
			return "this process's"
		}
		return "the Go runtime's default (every CPU, in every node)"
	}
	return m.NodeProcs
}
