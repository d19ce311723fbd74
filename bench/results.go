package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shoal-dev/shoal/l2cache"
)

// CouplingResults is everything a coupling run measured: results.json.
type CouplingResults struct {
	Manifest Manifest `json:"manifest"`
	// Runs holds one list of arms per repeat.
	Runs [][]ArmResult `json:"runs"`
	// Switch holds the switch stage of each repeat (Experiment.Switch).
	Switch []SwitchRun `json:"switch,omitempty"`
}

// SwitchRun is one run of the switch stage: the whole window's figures,
// its timeline and the switches.
type SwitchRun struct {
	Repeat int             `json:"repeat"`
	Nodes  []NodePlacement `json:"placement"`
	// Stage is the whole window's figures, as an arm's stage, with its
	// timeline.
	Stage    StageResult   `json:"stage"`
	Switches []SwitchEvent `json:"switches"`
	// Windows is each mode's steady throughput (SwitchWindows).
	Windows []SwitchWindow `json:"windows,omitempty"`
	// FinalMode is the cluster's mode record after the window, as GET
	// /v1/cache/mode answered it ("mode (phase, epoch)").
	FinalMode string `json:"final_mode"`
	// PeakRSS is each node's peak resident memory (VmHWM), bytes.
	PeakRSS map[string]uint64 `json:"peak_rss_bytes"`
	// NodeProcs is each node process's GOMAXPROCS (0: the runtime's
	// default; CouplingOptions.NodeProcs).
	NodeProcs int    `json:"node_gomaxprocs,omitempty"`
	Error     string `json:"error,omitempty"`
}

// SwitchEvent is one switch: PUT /v1/cache/mode through Via, from At
// (seconds from the window's start) until it answered, Seconds later.
type SwitchEvent struct {
	From    string  `json:"from"`
	To      string  `json:"to"`
	Via     string  `json:"via"`
	At      float64 `json:"at_s"`
	Seconds float64 `json:"seconds"`
	Status  int     `json:"status"`
	Epoch   uint64  `json:"epoch"`
	Error   string  `json:"error,omitempty"`
	// Retried lists the answers that left the outcome open and were
	// followed (modeswitch.Switch), oldest first.
	Retried []string `json:"retried,omitempty"`
}

// OK is whether the switch was answered 200.
func (s SwitchEvent) OK() bool { return s.Status == 200 && s.Error == "" }

// Manifest says how and where the figures were made.
type Manifest struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Interrupted is set when the run stopped early (Ctrl-C or an
	// error); Error says why.
	Interrupted bool   `json:"interrupted"`
	Error       string `json:"error,omitempty"`
	Commit      string `json:"commit"`
	GoVersion   string `json:"go_version"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	// NodeProcs says what GOMAXPROCS the node processes ran with:
	// "share" (max(1, CPUs / nodes) each), "default" (the runtime's) or
	// a number (CouplingOptions.NodeProcs); empty in results from before
	// it was set, where it was the runtime's default.
	NodeProcs string `json:"node_procs,omitempty"`
	// Pinning says which CPUs the load generator and the nodes ran on
	// (CouplingOptions.PinLoadgen); empty: every process on every CPU.
	Pinning string `json:"pinning,omitempty"`
	// Database is the database the nodes share: empty for a SQLite file
	// per arm, else the PostgreSQL server (CouplingOptions.Postgres).
	Database string `json:"database,omitempty"`
	// WarmupArm says a discarded warm-up arm ran before the first repeat
	// (CouplingOptions.WarmupArm).
	WarmupArm bool   `json:"warmup_arm,omitempty"`
	NumCPU    int    `json:"num_cpu"`
	CPUModel  string `json:"cpu_model"`
	// Nodes is "processes" (one 'shoal node' each, on loopback) or
	// "in-process"; Loadgen likewise ("process" or "in-process").
	Nodes   string `json:"nodes"`
	Loadgen string `json:"loadgen"`
	Repeat  int    `json:"repeat"`
	// ArmOrder says in what order each repeat ran the arms (empty in
	// results from before the order alternated: the experiment's, every
	// repeat).
	ArmOrder       string      `json:"arm_order,omitempty"`
	Experiment     *Experiment `json:"experiment"`
	ExperimentFile string      `json:"experiment_file"`
	Data           DataSummary `json:"data"`
}

// DataSummary is what the seed wrote.
type DataSummary struct {
	Users        int `json:"users"`
	Projects     int `json:"projects"`
	Repositories int `json:"repositories"`
	PullRequests int `json:"pull_requests"`
	Comments     int `json:"comments"`
}

// ArmResult is one arm of one repeat.
type ArmResult struct {
	Arm
	Repeat int             `json:"repeat"`
	Nodes  []NodePlacement `json:"placement"`
	Stages []StageResult   `json:"stages"`
	// PeakRSS is each node's peak resident memory (VmHWM), bytes.
	PeakRSS map[string]uint64 `json:"peak_rss_bytes"`
	// NodeProcs is each node process's GOMAXPROCS (0: the runtime's
	// default; CouplingOptions.NodeProcs).
	NodeProcs int    `json:"node_gomaxprocs,omitempty"`
	Error     string `json:"error,omitempty"`
}

// StageResult is one arm at one client count.
type StageResult struct {
	Clients int     `json:"clients"`
	Seconds float64 `json:"seconds"`
	// Ops are per operation; Total merges them.
	Ops     []OpResult `json:"ops"`
	Total   OpResult   `json:"total"`
	Cache   CacheFigs  `json:"cache"`
	Traffic Traffic    `json:"traffic"`
	CPU     CPUFigs    `json:"cpu"`
	Lag     LagFigs    `json:"invalidation_lag"`
	Errors  []string   `json:"first_errors,omitempty"`
	// Timeline is the window's buckets, for a stage run with them (the
	// switch stage).
	Timeline []TimelineBucket `json:"timeline,omitempty"`
	// OthersShareAttempts is the share of the machine other processes
	// used in each attempt at the stage (Experiment.Quiet); the figures
	// are those of the least disturbed.
	OthersShareAttempts []float64 `json:"others_share_attempts"`
}

// OpResult is one operation's figures in a stage; latencies in ms.
type OpResult struct {
	Op        string  `json:"op"`
	Count     int64   `json:"count"`
	Errors    int64   `json:"errors"`
	Conflicts int64   `json:"conflicts"`
	OpsPerSec float64 `json:"ops_per_sec"`
	MeanMs    float64 `json:"mean_ms"`
	StddevMs  float64 `json:"stddev_ms"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
	// Hist is the latency histogram (µs), HDR V2 compressed, base64.
	Hist string `json:"hist"`
}

// CacheFigs are the L2 counters' differences over the stage, summed over
// the nodes. In DISTRIBUTED and NEAR mode a get goes to the key's owner, on this
// node or another: RemoteCalls counts the latter (gets, puts,
// invalidations and locks at remote owners, and replications to backups).
type CacheFigs struct {
	Hits              uint64  `json:"hits"`
	Misses            uint64  `json:"misses"`
	HitRatio          float64 `json:"hit_ratio"`
	Loads             uint64  `json:"loads"`
	RemoteCalls       uint64  `json:"remote_calls"`
	RemoteCallsPerGet float64 `json:"remote_calls_per_get"`
	InvalidationsSent uint64  `json:"invalidations_sent"`
	InvalidationsRecv uint64  `json:"invalidations_received"`
	// NearHits counts gets a NEAR node answered from its near copy
	// (included in Hits).
	NearHits uint64 `json:"near_hits"`
	// By cause, summed over the nodes (l2cache's stats.go names them):
	// gets a NEAR node did not answer near, wholesale drops of near
	// copies (and copies not kept), and gets an owner answered with a
	// miss or that read through.
	NearMisses  map[string]uint64 `json:"near_misses,omitempty"`
	NearDrops   map[string]uint64 `json:"near_drops,omitempty"`
	OwnerMisses map[string]uint64 `json:"owner_misses,omitempty"`
	// RemoteByKind splits RemoteCalls (get, put, change, repl, near) and
	// counts the query-space updates sent straight to each member
	// besides (spaces: invalidations, not in RemoteCalls).
	RemoteByKind map[string]uint64 `json:"remote_calls_by_kind,omitempty"`
	// MissedClears, Resets and Exclusions: region clears after missed
	// bus messages, lease resets, and members excluded by a write.
	MissedClears uint64 `json:"missed_clears"`
	Resets       uint64 `json:"resets"`
	Exclusions   uint64 `json:"exclusions"`
	// RegionMisses splits Misses by region, summed over the nodes: where
	// one mode's hit ratio differs from another's.
	RegionMisses map[string]uint64 `json:"region_misses,omitempty"`
	// Writes is how long the writes' cache work took on the writers, by
	// what it did (lock, change, spaces: l2cache.NodeStats.WriteLatency),
	// and OwnerWaits how long the owners then waited for their backups
	// and for the keys' near holders (l2cache.NodeStats.OwnerWait): the
	// nodes' histograms over the stage, merged.
	Writes     map[string]WaitFigs `json:"writes,omitempty"`
	OwnerWaits map[string]WaitFigs `json:"owner_waits,omitempty"`
}

// WaitFigs summarise a histogram of durations (l2cache.Durations): its
// count, mean and quantiles (interpolated within its log2 buckets), and
// the buckets, so that repeats can be merged.
type WaitFigs struct {
	Count   uint64   `json:"count"`
	MeanMs  float64  `json:"mean_ms"`
	P50Ms   float64  `json:"p50_ms"`
	P99Ms   float64  `json:"p99_ms"`
	Usec    uint64   `json:"usec"`
	Buckets []uint64 `json:"buckets"`
}

// addWaits adds the histograms' growth from b to a into sum.
func addWaits(sum *map[string]WaitFigs, a, b map[string]l2cache.DurationsSnapshot) {
	for k, ah := range a {
		bh := b[k]
		w := (*sum)[k]
		if w.Buckets == nil {
			w.Buckets = make([]uint64, l2cache.LagBuckets)
		}
		grew := false
		for i, n := range ah.Buckets {
			var was uint64
			if i < len(bh.Buckets) {
				was = bh.Buckets[i]
			}
			if n > was && i < len(w.Buckets) {
				w.Buckets[i] += n - was
				grew = true
			}
		}
		if !grew {
			continue
		}
		w.Usec += ah.Usec - bh.Usec
		if *sum == nil {
			*sum = map[string]WaitFigs{}
		}
		(*sum)[k] = w.summed()
	}
}

// summed fills in the count, mean and quantiles from the buckets and Usec.
func (w WaitFigs) summed() WaitFigs {
	w.Count = 0
	for _, n := range w.Buckets {
		w.Count += n
	}
	if w.Count == 0 {
		return w
	}
	w.MeanMs = float64(w.Usec) / float64(w.Count) / 1e3
	w.P50Ms, w.P99Ms = w.quantileMs(0.50), w.quantileMs(0.99)
	return w
}

// quantileMs is the q-quantile, interpolated linearly within its bucket
// (bucket i spans LagBucketBound(i-1) to LagBucketBound(i)).
func (w WaitFigs) quantileMs(q float64) float64 {
	rank := q * float64(w.Count)
	var below float64
	for i, n := range w.Buckets {
		if n == 0 || below+float64(n) < rank {
			below += float64(n)
			continue
		}
		lo, hi := 0.0, float64(l2cache.LagBucketBound(i))
		if i > 0 {
			lo = float64(l2cache.LagBucketBound(i - 1))
		}
		if i == len(w.Buckets)-1 {
			hi = 2 * lo // the last bucket is unbounded: its bound doubled
		}
		return (lo + (hi-lo)*(rank-below)/float64(n)) / 1e6
	}
	return 0
}

// mergeWaits merges the histograms of several stages (repeats).
func mergeWaits(sts []StageResult, f func(StageResult) map[string]WaitFigs) map[string]WaitFigs {
	out := map[string]WaitFigs{}
	for _, st := range sts {
		for k, w := range f(st) {
			m := out[k]
			if m.Buckets == nil {
				m.Buckets = make([]uint64, l2cache.LagBuckets)
			}
			for i, n := range w.Buckets {
				if i < len(m.Buckets) {
					m.Buckets[i] += n
				}
			}
			m.Usec += w.Usec
			out[k] = m.summed()
		}
	}
	return out
}

// addCauses adds a's counts over b's into sum.
func addCauses(sum *map[string]uint64, a, b map[string]uint64) {
	for k, v := range a {
		if d := v - b[k]; d > 0 {
			if *sum == nil {
				*sum = map[string]uint64{}
			}
			(*sum)[k] += d
		}
	}
}

// Traffic is what the nodes sent each other over the stage. Messages are
// peer RPC requests and one-way notes (bus fan-out included), from the
// nodes' counters; L2Bytes the L2 cache's own count of its remote calls'
// bytes (both ways); SocketBytes the kernel's count of bytes sent on the
// peer RPC connections (ss -ti), -1 where unavailable.
type Traffic struct {
	Messages         uint64  `json:"messages"`
	MessagesPerOp    float64 `json:"messages_per_op"`
	L2Bytes          uint64  `json:"l2_bytes"`
	L2BytesPerOp     float64 `json:"l2_bytes_per_op"`
	SocketBytes      int64   `json:"socket_bytes"`
	SocketBytesPerOp float64 `json:"socket_bytes_per_op"`
}

// CPUFigs is CPU time in the stage's measured window. Shares are of the
// whole machine (NumCPU × seconds). With nodes or load generator in
// process they share one process, and SharedProcess is set.
type CPUFigs struct {
	NodesSeconds   float64 `json:"nodes_seconds"`
	NodesShare     float64 `json:"nodes_share"`
	NodesMsPerOp   float64 `json:"nodes_ms_per_op"`
	LoadgenSeconds float64 `json:"loadgen_seconds"`
	LoadgenShare   float64 `json:"loadgen_share"`
	SharedProcess  bool    `json:"shared_process"`
	// MachineBusy is the share of the machine busy in the window
	// (/proc/stat); BenchShare what the benchmark's own processes used
	// (/proc/PID/stat: the runner, the nodes and the load generator, with
	// the children each waited for, such as a node's git processes);
	// IRQShare the kernel's interrupt work, charged to no process (on
	// loopback mostly the benchmark's own packets); OthersShare the rest,
	// other processes on a shared machine; and Load1 the 1-minute load
	// average at the end: noise made visible. Without /proc/PID/stat,
	// BenchShare is 0 and OthersShare what neither the nodes nor the load
	// generator reported using.
	MachineBusy float64 `json:"machine_busy"`
	BenchShare  float64 `json:"bench_share,omitempty"`
	// DBSeconds is the CPU time of the database server the nodes share
	// (CouplingOptions.Postgres: the postmaster and its backends; part of
	// BenchShare, not of NodesSeconds), DBMsPerOp per operation.
	DBSeconds   float64 `json:"db_seconds,omitempty"`
	DBMsPerOp   float64 `json:"db_ms_per_op,omitempty"`
	IRQShare    float64 `json:"irq_share,omitempty"`
	OthersShare float64 `json:"others_share"`
	Load1       float64 `json:"load1"`
	// StealShare is the share of the machine the hypervisor ran something
	// else on (/proc/stat's steal; part of MachineBusy).
	StealShare float64 `json:"steal_share,omitempty"`
	// MemNs is the median latency of a load from memory over the window,
	// and MemNsMax its largest sample, in ns (the runner's memory probe,
	// memprobe.go), one cause of a node's CPU time per operation moving
	// from one run to the next. 0 where not measured.
	MemNs    float64 `json:"mem_ns,omitempty"`
	MemNsMax float64 `json:"mem_ns_max,omitempty"`
}

// LagFigs is the invalidation lag: a write through one node returned
// until another node served it (ms).
type LagFigs struct {
	Samples  int64   `json:"samples"`
	Timeouts int     `json:"timeouts"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
}

func newManifest(o CouplingOptions) Manifest {
	m := Manifest{Started: time.Now().UTC(), Commit: gitCommit(), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU: runtime.NumCPU(), CPUModel: cpuModel(), Nodes: "processes", Loadgen: "process", Repeat: max(o.Repeat, 1),
		Experiment: o.Experiment, ExperimentFile: o.ExperimentFile, ArmOrder: armOrderAlternate}
	m.WarmupArm = o.WarmupArm
	switch {
	case o.InProcess:
		m.Nodes = "in-process"
	case o.NodeProcs == NodeProcsDefault:
		m.NodeProcs = "default"
	case o.NodeProcs > 0:
		m.NodeProcs = strconv.Itoa(o.NodeProcs)
	default:
		m.NodeProcs = "share"
	}
	if o.LoadgenInProcess {
		m.Loadgen = "in-process"
	}
	return m
}

func (r *CouplingResults) finish(err error) {
	r.Manifest.Finished = time.Now().UTC()
	if err != nil {
		r.Manifest.Interrupted, r.Manifest.Error = true, err.Error()
	}
}

// gitCommit is the working tree's commit, "+dirty" if it has changes.
func gitCommit() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// stageFigures turns the generator's result and the counters' snapshots
// into a stage's figures.
func stageFigures(spec LoadSpec, lr *LoadResult, before, after counterSnapshot, shared bool) StageResult {
	st := StageResult{Clients: spec.Clients, Seconds: lr.Seconds, Errors: lr.Errors, Timeline: lr.Timeline}
	total := newHist()
	var tot OpResult
	for _, op := range Ops {
		oc := lr.Ops[op]
		if oc == nil {
			continue
		}
		h := decodeHist(oc.Hist)
		total.Merge(h)
		r := opFigures(op, h, oc, lr.Seconds)
		st.Ops = append(st.Ops, r)
		tot.Count += oc.Count
		tot.Errors += oc.Errors
		tot.Conflicts += oc.Conflicts
	}
	st.Total = opFigures("total", total, &OpCount{Count: tot.Count, Errors: tot.Errors, Conflicts: tot.Conflicts}, lr.Seconds)
	st.Cache, st.Traffic, st.CPU = counterFigures(before, after, float64(st.Total.Count), lr.Seconds, lr.NumCPU)
	st.CPU.LoadgenSeconds = lr.CPUSeconds
	st.CPU.LoadgenShare = lr.CPUSeconds / (lr.Seconds * float64(max(lr.NumCPU, 1)))
	st.CPU.SharedProcess = shared
	st.CPU.MachineBusy = busyShare(before.machine, after.machine)
	st.CPU.StealShare = shareOf(float64(after.machine.steal-before.machine.steal), before.machine, after.machine)
	switch {
	case before.benchOK && after.benchOK && after.bench >= before.bench:
		st.CPU.BenchShare = shareOf((after.bench-before.bench)*clockTicks, before.machine, after.machine)
		st.CPU.IRQShare = shareOf(float64(after.machine.irq-before.machine.irq), before.machine, after.machine)
		st.CPU.OthersShare = max(st.CPU.MachineBusy-st.CPU.BenchShare-st.CPU.IRQShare, 0)
	case shared:
		st.CPU.OthersShare = max(st.CPU.MachineBusy-max(st.CPU.NodesShare, st.CPU.LoadgenShare), 0)
	default:
		st.CPU.OthersShare = max(st.CPU.MachineBusy-st.CPU.NodesShare-st.CPU.LoadgenShare, 0)
	}
	if before.dbOK && after.dbOK && after.db >= before.db {
		st.CPU.DBSeconds = after.db - before.db
		st.CPU.DBMsPerOp = st.CPU.DBSeconds * 1000 / max(float64(st.Total.Count), 1)
	}
	st.CPU.Load1 = loadAverage()
	lag := decodeHist(lr.Lag)
	st.Lag = LagFigs{Samples: lag.TotalCount(), Timeouts: lr.LagTimeouts, P50Ms: usMs(lag.ValueAtQuantile(50)),
		P99Ms: usMs(lag.ValueAtQuantile(99)), MaxMs: usMs(lag.Max())}
	return st
}

func opFigures(op string, h *hdrhistogram.Histogram, oc *OpCount, seconds float64) OpResult {
	return OpResult{Op: op, Count: oc.Count, Errors: oc.Errors, Conflicts: oc.Conflicts, OpsPerSec: float64(oc.Count) / seconds,
		MeanMs: h.Mean() / 1e3, StddevMs: h.StdDev() / 1e3, P50Ms: usMs(h.ValueAtQuantile(50)), P90Ms: usMs(h.ValueAtQuantile(90)),
		P99Ms: usMs(h.ValueAtQuantile(99)), P999Ms: usMs(h.ValueAtQuantile(99.9)), MaxMs: usMs(h.Max()), Hist: encodeHist(h)}
}

func usMs(us int64) float64 { return float64(us) / 1e3 }

// counterFigures sums the differences of the nodes' counters.
func counterFigures(before, after counterSnapshot, ops, seconds float64, ncpu int) (CacheFigs, Traffic, CPUFigs) {
	var c CacheFigs
	var t Traffic
	var cpu CPUFigs
	seenPID := map[int]bool{}
	for i := range min(len(before.stats), len(after.stats)) {
		b, a := before.stats[i], after.stats[i]
		for name, ar := range a.Cache.Regions {
			br := b.Cache.Regions[name]
			c.Hits += ar.Hits - br.Hits
			c.Misses += ar.Misses - br.Misses
			addCauses(&c.RegionMisses, map[string]uint64{name: ar.Misses}, map[string]uint64{name: br.Misses})
			c.Loads += ar.Loads - br.Loads
		}
		an, bn := a.Cache.Node, b.Cache.Node
		c.RemoteCalls += an.RemoteCalls - bn.RemoteCalls
		c.InvalidationsSent += an.InvalidationsSent - bn.InvalidationsSent
		c.InvalidationsRecv += an.InvalidationsReceived - bn.InvalidationsReceived
		c.NearHits += an.NearHits - bn.NearHits
		addCauses(&c.NearMisses, an.NearMisses, bn.NearMisses)
		addCauses(&c.NearDrops, an.NearDrops, bn.NearDrops)
		addCauses(&c.OwnerMisses, an.OwnerMisses, bn.OwnerMisses)
		addCauses(&c.RemoteByKind, an.RemoteByKind, bn.RemoteByKind)
		addWaits(&c.Writes, an.WriteLatency, bn.WriteLatency)
		addWaits(&c.OwnerWaits, an.OwnerWait, bn.OwnerWait)
		c.MissedClears += an.MissedClears - bn.MissedClears
		c.Resets += an.Resets - bn.Resets
		c.Exclusions += an.Exclusions - bn.Exclusions
		t.L2Bytes += an.RemoteBytes - bn.RemoteBytes
		t.Messages += (a.RPC.Calls + a.RPC.NotifySent) - (b.RPC.Calls + b.RPC.NotifySent)
		if !seenPID[a.Process.PID] {
			seenPID[a.Process.PID] = true
			cpu.NodesSeconds += a.Process.CPUSeconds - b.Process.CPUSeconds
		}
	}
	if gets := c.Hits + c.Misses; gets > 0 {
		c.HitRatio = float64(c.Hits) / float64(gets)
		c.RemoteCallsPerGet = float64(c.RemoteCalls) / float64(gets)
	}
	t.SocketBytes, t.SocketBytesPerOp = -1, -1
	t.SocketBytes = socketDelta(before.sockets, after.sockets)
	if ops > 0 {
		t.MessagesPerOp = float64(t.Messages) / ops
		t.L2BytesPerOp = float64(t.L2Bytes) / ops
		if t.SocketBytes >= 0 {
			t.SocketBytesPerOp = float64(t.SocketBytes) / ops
		}
		cpu.NodesMsPerOp = cpu.NodesSeconds * 1e3 / ops
	}
	cpu.NodesShare = cpu.NodesSeconds / (seconds * float64(max(ncpu, 1)))
	return c, t, cpu
}

// armKey identifies an arm across repeats and result files.
func armKey(a Arm) string { return a.Name() }

// StageSeries is one arm's figures across repeats, per stage.
type StageSeries struct {
	Arm     Arm
	Clients []int
	// Stages[i] holds stage i of every repeat that completed it.
	Stages [][]StageResult
}

// Series groups the results by arm, in experiment order.
func (r *CouplingResults) Series() []StageSeries {
	var out []StageSeries
	idx := map[string]int{}
	for _, run := range r.Runs {
		for _, ar := range run {
			k := armKey(ar.Arm)
			i, ok := idx[k]
			if !ok {
				i = len(out)
				idx[k] = i
				out = append(out, StageSeries{Arm: ar.Arm})
			}
			s := &out[i]
			for si, st := range ar.Stages {
				if si == len(s.Stages) {
					s.Stages = append(s.Stages, nil)
					s.Clients = append(s.Clients, st.Clients)
				}
				s.Stages[si] = append(s.Stages[si], st)
			}
		}
	}
	return out
}

// mean averages f over the repeats of a stage.
func stageMean(sts []StageResult, f func(StageResult) float64) float64 {
	if len(sts) == 0 {
		return 0
	}
	var s float64
	for _, st := range sts {
		s += f(st)
	}
	return s / float64(len(sts))
}

// spread is the min and max of f over the repeats.
func stageSpread(sts []StageResult, f func(StageResult) float64) (lo, hi float64) {
	vals := make([]float64, 0, len(sts))
	for _, st := range sts {
		vals = append(vals, f(st))
	}
	if len(vals) == 0 {
		return 0, 0
	}
	return slices.Min(vals), slices.Max(vals)
}
