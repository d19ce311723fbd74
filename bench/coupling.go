package bench

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/internal/modeswitch"
	"github.com/shoal-dev/shoal/internal/pgserver"
)

// CouplingOptions configures a run of the coupling experiment.
type CouplingOptions struct {
	// Experiment is the checked experiment; ExperimentFile its text, kept
	// in the manifest.
	Experiment     *Experiment
	ExperimentFile string
	// Binary is the shoal executable: the nodes (unless InProcess) and
	// the load generator ('shoal bench loadgen', unless LoadgenInProcess).
	Binary string
	// InProcess runs the nodes inside this process (a quick look: they
	// share its CPU and memory); LoadgenInProcess the load generator.
	InProcess, LoadgenInProcess bool
	// Dir is a scratch directory (databases, node directories, logs).
	Dir string
	// Repeat runs the whole experiment this many times (default 1).
	Repeat int
	// Progress, if set, shows the run's progress there: a bar redrawn in
	// place on a terminal, one line per step otherwise.
	Progress io.Writer
	// Warnings, if set, receives a line for each stage other processes
	// disturbed beyond the quiet guard's limit (or, with the guard off,
	// beyond DisturbedShare of the machine).
	Warnings io.Writer
	// Logger receives in-process nodes' logs (default: discarded).
	Logger *slog.Logger
	// ProfileDir, if set, receives a CPU profile of every node over each
	// stage's measured window (from its /debug/pprof/profile), one file
	// per node and attempt: TAG-NODE.pprof, TAG as the stage's load spec
	// (r1n6s0a0: repeat 1, near, 6 nodes, stage 0, attempt 0). Nodes in
	// process share one profiler: the first node's profile is the
	// process's, and the only one taken. The switch stage is profiled
	// per mode's steady window instead (profileWindow):
	// TAG-wNN-MODE-NODE.pprof. Beside each profile, the node's /v1/stats
	// at both ends of its window: NAME.stats0.json and NAME.stats1.json.
	ProfileDir string
	// NodeProcs is the GOMAXPROCS of each node process. 0 (the default)
	// gives each node its share of the machine, max(1, CPUs / nodes), as
	// if it ran on a host of its own: with the runtime's default every
	// node has a processor per CPU, and on a machine shared by more nodes
	// than CPUs each node's scheduler then spins a second thread up to
	// look for work whenever a goroutine wakes — work a host of its own
	// would do on a core left idle, and here takes from the other nodes,
	// the more the more a mode waits on messages (BENCHMARKS.md, "Issue
	// 19: where NEAR's extra CPU goes at 6 nodes"). NodeProcsDefault
	// leaves the runtime's default. Nodes in process share this
	// process's.
	NodeProcs int
	// Postgres runs the arms on a PostgreSQL server (pgserver, on
	// loopback) the nodes share, as a cluster on several hosts must,
	// instead of a SQLite file: a cache miss then costs a round trip to
	// another process, as in production. Each arm gets a copy of the
	// seeded database (CREATE DATABASE … TEMPLATE). The server's CPU
	// counts as the benchmark's own, and is reported apart
	// (CPUFigs.DBSeconds).
	Postgres bool
	// WarmupArm runs the first stage of the run's first arm once before
	// the first repeat, on a cluster of its own, and discards it.
	// Without it a run's first arm ran 8–23 % below its other repeats in
	// each of four runs measured (the memory probe reading alike), which
	// flattered repeat 1's ratios against the mode that runs first
	// (BENCHMARKS.md, "The run's first arm, and a warm-up arm").
	WarmupArm bool
	// PinLoadgen keeps the load generator on a CPU of its own (the first
	// this process may use) and the nodes, and the PostgreSQL server, on
	// the others (Linux; at least two CPUs; nodes and load generator as
	// processes). Sharing every CPU, the load generator's own CPU per
	// operation moved with the nodes' wake-ups: by 0–42 % between the
	// arms of one run (BENCHMARKS.md, "Issue 19: the waits are not the
	// gap"). Pinned, it holds still, and the nodes' throughput is what
	// their CPUs give.
	PinLoadgen bool

	// afterStage, if set, is called after each stage (tests).
	afterStage func()
}

// Coupling runs every arm of the experiment, Repeat times, and returns
// what it measured. If ctx ends (Ctrl-C) it stops the cluster and returns
// the stages completed so far, marked Interrupted, with ctx's error; the
// caller can still write the report.
func Coupling(ctx context.Context, o CouplingOptions) (*CouplingResults, error) {
	if o.Experiment == nil {
		return nil, errors.New("coupling: no experiment")
	}
	if err := o.Experiment.Validate(); err != nil {
		return nil, err
	}
	if (!o.InProcess || !o.LoadgenInProcess) && o.Binary == "" {
		return nil, errors.New("coupling: the shoal binary is needed to run nodes or the load generator as processes")
	}
	pins, err := newPins(o)
	if err != nil {
		return nil, err
	}
	o.Repeat = max(o.Repeat, 1)
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	res := &CouplingResults{Manifest: newManifest(o)}
	res.Manifest.Pinning = pins.String()
	var pg *pgserver.Server
	if o.Postgres {
		if pg, err = pgserver.Start(ctx, nil, ""); err != nil {
			res.finish(err)
			return res, fmt.Errorf("starting PostgreSQL: %w", err)
		}
		defer pg.Stop()
		if err := pins.node(pg.PID()); err != nil {
			res.finish(err)
			return res, fmt.Errorf("the PostgreSQL server: %w", err)
		}
		res.Manifest.Database = "PostgreSQL " + pg.Addr() + " (loopback)"
	}
	data, err := prepareData(ctx, filepath.Join(o.Dir, "template"), o.Experiment, pg)
	if err != nil {
		res.finish(err)
		return res, fmt.Errorf("seeding the template database: %w", err)
	}
	res.Manifest.Data = data.summary
	r := &couplingRunner{o: o, data: data, pg: pg, pins: pins, progress: newProgress(o)}
	defer r.progress.finish()
	if o.WarmupArm {
		if err := r.warmUp(ctx); err != nil {
			res.finish(err)
			return res, fmt.Errorf("the warm-up arm: %w", err)
		}
	}
	for rep := 1; rep <= o.Repeat; rep++ {
		var run []ArmResult
		for i, arm := range repeatOrder(o.Experiment.Arms(), rep) {
			ar, err := r.runArm(ctx, rep, i, arm)
			run = append(run, ar)
			if err != nil {
				res.Runs = append(res.Runs, run)
				res.finish(err)
				return res, err
			}
		}
		res.Runs = append(res.Runs, run)
		if o.Experiment.Switch != nil {
			sr, err := r.runSwitch(ctx, rep)
			res.Switch = append(res.Switch, sr)
			if err != nil {
				res.finish(err)
				return res, err
			}
		}
	}
	res.finish(nil)
	return res, nil
}

// repeatOrder is the order repeat rep (from 1) runs the arms in: the
// experiment's in odd repeats, reversed in even ones. The machine's speed
// drifts over minutes (10–30 % on the reference machine), and a fixed
// order lets the drift favour whichever arm runs first; alternating it
// lets a steady drift weigh on every arm alike over two repeats.
func repeatOrder(arms []Arm, rep int) []Arm {
	if rep%2 == 0 {
		arms = slices.Clone(arms)
		slices.Reverse(arms)
	}
	return arms
}

// armOrderAlternate is the manifest's ArmOrder for repeatOrder.
const armOrderAlternate = "the experiment's in odd repeats, reversed in even ones"

// couplingRunner holds a run's shared state.
type couplingRunner struct {
	o        CouplingOptions
	data     *couplingData
	pg       *pgserver.Server // CouplingOptions.Postgres, else nil
	pins     *pins            // CouplingOptions.PinLoadgen, else nil
	progress *progress
	// loadgenPID is the running load generator process (0: none, or in
	// process), whose CPU time the snapshots count as the benchmark's.
	loadgenPID atomic.Int64
	// warming is set while warmUp runs its discarded arm.
	warming bool
}

// warmUp runs the first stage of the run's first arm (repeat 1's first)
// on a cluster of its own, and discards what it measured
// (CouplingOptions.WarmupArm). Repeat 0 in its directory and tags.
func (r *couplingRunner) warmUp(ctx context.Context) error {
	r.warming = true
	defer func() { r.warming = false }()
	_, err := r.runArm(ctx, 0, 0, repeatOrder(r.o.Experiment.Arms(), 1)[0])
	return err
}

// runArm starts the arm's cluster on a copy of the template database,
// runs the stages and stops it. A failed stage ends the arm (and, as it
// usually means the machine or the build is broken, the run).
func (r *couplingRunner) runArm(ctx context.Context, rep, idx int, arm Arm) (ar ArmResult, err error) {
	e := r.o.Experiment
	ar = ArmResult{Arm: arm, Repeat: rep}
	dir := filepath.Join(r.o.Dir, fmt.Sprintf("r%d-%s-%d", rep, arm.Mode, arm.Nodes))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ar, err
	}
	db, err := r.armDB(ctx, dir, fmt.Sprintf("r%d_%s_%d", rep, arm.Mode, arm.Nodes))
	if err != nil {
		return ar, err
	}
	label := fmt.Sprintf("repeat %d/%d, arm %d/%d %s", rep, r.o.Repeat, idx+1, len(e.Arms()), arm.Name())
	if r.warming {
		label = "warm-up arm " + arm.Name() + " (discarded)"
	}
	r.progress.describe(label + ": starting")
	ac, err := startArm(ctx, armConfig{arm: arm, dir: dir, db: db, token: r.data.token, binary: r.nodeBinary(),
		procs: r.nodeProcs(arm.Nodes), invalidation: e.Invalidation, backups: *e.Backups, logger: r.o.Logger})
	if err != nil {
		ar.Error = err.Error()
		return ar, fmt.Errorf("%s: %w", arm.Name(), err)
	}
	defer ac.Stop()
	ar.Nodes, ar.NodeProcs = ac.Nodes(), r.nodeProcs(arm.Nodes)
	if err := r.pins.nodes(ac.Nodes()); err != nil {
		ar.Error = err.Error()
		return ar, fmt.Errorf("%s: %w", arm.Name(), err)
	}
	var last counterSnapshot
	defer func() { ar.PeakRSS = peakRSS(last) }()
	for si, clients := range e.Stages.Clients {
		r.progress.describe(fmt.Sprintf("%s, stage %d/%d: %d clients", label, si+1, len(e.Stages.Clients), clients))
		st, after, err := r.quietStage(ctx, ar.Nodes, clients, fmt.Sprintf("r%d%s%ds%d", rep, arm.Mode[:1], arm.Nodes, si))
		if err != nil {
			ar.Error = err.Error()
			return ar, fmt.Errorf("%s, %d clients: %w", arm.Name(), clients, err)
		}
		ar.Stages = append(ar.Stages, st)
		last = after
		if r.warming {
			break // the first stage warms the machine up; the rest would not add to it
		}
		if r.o.afterStage != nil {
			r.o.afterStage()
		}
	}
	return ar, nil
}

// quietStage runs a stage, and again (Experiment.Quiet) while other
// processes took too much of the machine, keeping the attempt they
// disturbed least; the stage records the others' share in each attempt.
func (r *couplingRunner) quietStage(ctx context.Context, nodes []NodePlacement, clients int, tag string) (StageResult, counterSnapshot, error) {
	q := r.o.Experiment.Quiet
	if r.warming {
		// The warm-up arm's stage is discarded: one attempt, whatever
		// else ran, and no warning.
		st, after, err := r.runStage(ctx, nodes, r.spec(nodes, clients, tag+"a0"))
		r.progress.skipAttempts(q.Retries)
		return st, after, err
	}
	var best StageResult
	var bestAfter counterSnapshot
	var shares []float64
	limit := disturbedLimit(q)
	for attempt := 0; ; attempt++ {
		st, after, err := r.runStage(ctx, nodes, r.spec(nodes, clients, fmt.Sprintf("%sa%d", tag, attempt)))
		if err != nil {
			return st, after, err
		}
		shares = append(shares, st.CPU.OthersShare)
		if attempt == 0 || st.CPU.OthersShare < best.CPU.OthersShare {
			best, bestAfter = st, after
		}
		again := q.MaxOtherCPU > 0 && st.CPU.OthersShare > q.MaxOtherCPU && attempt < q.Retries
		if st.CPU.OthersShare > limit {
			r.warnf("%s: other processes used %.0f%% of the machine (limit %.0f%%); %s", r.progress.step(),
				100*st.CPU.OthersShare, 100*limit, map[bool]string{true: fmt.Sprintf("running it again (attempt %d of %d)", attempt+2, q.Retries+1),
					false: "its figures are disturbed"}[again])
		}
		if !again {
			r.progress.skipAttempts(q.Retries - attempt)
			break
		}
	}
	best.OthersShareAttempts = shares
	return best, bestAfter, nil
}

// DisturbedShare is the share of the machine other processes may use
// during a stage before the run warns, when the quiet guard is off.
const DisturbedShare = 0.25

// disturbedLimit is the share above which a stage is reported disturbed:
// the quiet guard's limit, or DisturbedShare without one.
func disturbedLimit(q Quiet) float64 {
	if q.MaxOtherCPU > 0 {
		return q.MaxOtherCPU
	}
	return DisturbedShare
}

// warnf writes a warning line to o.Warnings, above the progress bar.
func (r *couplingRunner) warnf(format string, args ...any) {
	if r.o.Warnings != nil {
		r.progress.above(func() { fmt.Fprintf(r.o.Warnings, "warning: "+format+"\n", args...) })
	}
}

// peakRSS is each node's peak resident memory in a snapshot.
func peakRSS(s counterSnapshot) map[string]uint64 {
	out := map[string]uint64{}
	for _, st := range s.stats {
		out[st.Node] = st.Process.PeakRSSBytes
	}
	return out
}

// NodeProcsDefault is CouplingOptions.NodeProcs that leaves the nodes'
// GOMAXPROCS to the Go runtime (every CPU, or the environment's
// GOMAXPROCS).
const NodeProcsDefault = -1

// nodeProcs is the GOMAXPROCS of each of n node processes: 0 for the
// runtime's default (CouplingOptions.NodeProcs).
func (r *couplingRunner) nodeProcs(n int) int {
	switch {
	case r.o.InProcess || r.o.NodeProcs == NodeProcsDefault:
		return 0
	case r.o.NodeProcs > 0:
		return r.o.NodeProcs
	}
	return max(1, r.pins.nodeCPUs()/max(n, 1))
}

func (r *couplingRunner) nodeBinary() string {
	if r.o.InProcess {
		return ""
	}
	return r.o.Binary
}

func (r *couplingRunner) spec(nodes []NodePlacement, clients int, tag string) LoadSpec {
	e := r.o.Experiment
	s := LoadSpec{Token: r.data.token, Projects: r.data.projects, Repos: r.data.repos, Mix: e.Mix, Zipf: e.Zipf,
		Seed: e.Seed, Clients: clients, Warmup: e.Stages.Warmup, Duration: e.Stages.Duration, LagProbe: e.LagProbe, Tag: tag}
	for _, n := range nodes {
		s.Targets = append(s.Targets, n.HTTP)
	}
	return s
}

// runStage runs the load generator for one stage, snapshotting the
// nodes' counters when its warm-up ends and after its last request.
func (r *couplingRunner) runStage(ctx context.Context, nodes []NodePlacement, spec LoadSpec) (StageResult, counterSnapshot, error) {
	return r.runStageHook(ctx, nodes, spec, nil)
}

// runStageHook is runStage, calling hook (if set) with each event of the
// load generator before the runner's own handling of it. With a hook (the
// switch stage) it takes no CPU profile of the whole stage: the switch
// stage profiles each mode's window (profileWindow), and a node runs one
// CPU profile at a time.
func (r *couplingRunner) runStageHook(ctx context.Context, nodes []NodePlacement, spec LoadSpec, hook func(LoadEvent)) (StageResult, counterSnapshot, error) {
	var before, after counterSnapshot
	var snapErr error
	var probe *memProbe
	var memNs, memNsMax float64
	defer func() {
		if probe != nil {
			probe.Stop()
		}
	}()
	var profiles sync.WaitGroup
	var profMu sync.Mutex
	var profErr error
	defer profiles.Wait()
	onEvent := func(ev LoadEvent) {
		if hook != nil {
			hook(ev)
		}
		var err error
		switch ev.Event {
		case "measure":
			if r.o.ProfileDir != "" && hook == nil && !r.warming {
				profiled := nodes
				if r.o.InProcess {
					profiled = nodes[:1]
				}
				for _, n := range profiled {
					profiles.Go(func() {
						if err := r.profileNode(ctx, n, spec); err != nil {
							profMu.Lock()
							profErr = errors.Join(profErr, err)
							profMu.Unlock()
						}
					})
				}
			}
			before, err = takeSnapshot(ctx, nodes, int(r.loadgenPID.Load()), r.dbPID())
			if probe == nil && !r.o.InProcess { // in process, the probe would walk beside the nodes
				probe = startMemProbe(probeRing(), memProbeEvery, memProbeSteps)
			}
		case "result":
			after, err = takeSnapshot(ctx, nodes, int(r.loadgenPID.Load()), r.dbPID())
			if probe != nil {
				memNs, memNsMax = probe.Stop()
			}
		}
		if err != nil && snapErr == nil {
			snapErr = err
		}
	}
	stop := r.progress.runStage(spec.Warmup.D() + spec.Duration.D())
	var lr *LoadResult
	var err error
	if r.o.LoadgenInProcess {
		lr, err = RunLoad(ctx, spec, onEvent)
		if err == nil {
			onEvent(LoadEvent{Event: "result", Result: lr})
		}
	} else {
		lr, err = r.loadgenProcess(ctx, spec, onEvent)
	}
	stop()
	profiles.Wait()
	if err == nil {
		err = snapErr
	}
	if err == nil && profErr != nil {
		err = fmt.Errorf("CPU profiles: %w", profErr)
	}
	if err != nil {
		return StageResult{}, after, err
	}
	st := stageFigures(spec, lr, before, after, r.o.LoadgenInProcess || r.o.InProcess)
	st.CPU.MemNs, st.CPU.MemNsMax = memNs, memNsMax
	return st, after, nil
}

// profileNode writes a CPU profile of node n over the stage's measured
// window to the profile directory (CouplingOptions.ProfileDir).
func (r *couplingRunner) profileNode(ctx context.Context, n NodePlacement, spec LoadSpec) error {
	secs := max(int(spec.Duration.D()/time.Second), 1)
	return r.profileTo(ctx, n, secs, spec.Tag+"-"+n.Name)
}

// profileTo writes a CPU profile of node n over the next secs seconds to
// NAME.pprof in the profile directory, and the node's /v1/stats at both
// ends of it to NAME.stats0.json and NAME.stats1.json: what the node
// did in the profiled window is the difference of the two (its cache's
// misses by cause, its remote calls by kind, its messages). A snapshot
// that fails is left out; the profile's error is returned.
func (r *couplingRunner) profileTo(ctx context.Context, n NodePlacement, secs int, name string) error {
	pctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+time.Minute)
	defer cancel()
	base := filepath.Join(r.o.ProfileDir, name)
	stats := func(suffix string) {
		if b, err := httpc.DoToken(pctx, n.Token, "GET", n.HTTP, "/v1/stats", nil); err == nil {
			_ = os.WriteFile(base+suffix, b, 0o644)
		}
	}
	stats(".stats0.json")
	b, err := httpc.DoToken(pctx, n.Token, "GET", n.HTTP, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	stats(".stats1.json")
	return os.WriteFile(base+".pprof", b, 0o644)
}

// loadgenProcess runs 'shoal bench loadgen', the spec on its standard
// input, and passes on its events; the last is the result.
func (r *couplingRunner) loadgenProcess(ctx context.Context, spec LoadSpec, onEvent func(LoadEvent)) (*LoadResult, error) {
	in, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, r.o.Binary, "bench", "loadgen")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := r.pins.loadgen(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	r.loadgenPID.Store(int64(cmd.Process.Pid))
	defer r.loadgenPID.Store(0)
	var res *LoadResult
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		var ev LoadEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue
		}
		if ev.Result != nil {
			res = ev.Result
		}
		onEvent(ev)
	}
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if werr != nil || res == nil {
		return nil, fmt.Errorf("load generator: %v: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return res, nil
}

// ServeLoadgen is 'shoal bench loadgen': it reads a LoadSpec (JSON) from
// in, runs it and writes its events to out, one JSON object a line.
func ServeLoadgen(ctx context.Context, in io.Reader, out io.Writer) error {
	var spec LoadSpec
	if err := json.NewDecoder(in).Decode(&spec); err != nil {
		return fmt.Errorf("loadgen: reading the spec: %w", err)
	}
	enc := json.NewEncoder(out)
	var mu sync.Mutex
	emit := func(ev LoadEvent) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(ev)
	}
	res, err := RunLoad(ctx, spec, emit)
	if err != nil {
		return err
	}
	emit(LoadEvent{Event: "result", Result: res})
	return nil
}

// couplingData is the seeded template database and what the load generator
// needs to know about it.
type couplingData struct {
	path     string
	token    string
	projects []string
	repos    []RepoRef
	summary  DataSummary
}

// prepareData seeds a template database once; every arm gets a copy.
func prepareData(ctx context.Context, dir string, e *Experiment, pg *pgserver.Server) (*couplingData, error) {
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ds := &couplingData{path: filepath.Join(dir, "shoal.db")}
	if pg != nil {
		ds.path = pg.URL(pgTemplate)
	}
	store, err := domain.Open(ctx, domain.Config{URL: ds.path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	d := e.Data
	seeded, err := domain.Seed(ctx, store, domain.SeedConfig{Users: d.Users, Projects: d.Projects, ReposPerProject: d.ReposPerProject,
		PRsPerRepo: d.PRsPerRepo, CommentsPerPR: d.CommentsPerPR, Seed: e.Seed})
	if err != nil {
		return nil, err
	}
	if ds.token, err = store.CreateToken(ctx, seeded.Admin.ID, "coupling-bench"); err != nil {
		return nil, err
	}
	ds.summary = DataSummary{Users: seeded.Users, Projects: seeded.Projects, Repositories: seeded.Repositories,
		PullRequests: seeded.PullRequests, Comments: seeded.Comments}
	return ds, ds.readKeys(ctx, store)
}

// readKeys lists the projects, repositories and pull requests in a fixed
// order.
func (ds *couplingData) readKeys(ctx context.Context, store *domain.Store) error {
	rows, err := store.DB().QueryContext(ctx, `SELECT p.project_key, r.slug, pr.id FROM pull_requests pr
		JOIN repositories r ON r.id = pr.repository_id JOIN projects p ON p.id = r.project_id
		ORDER BY p.project_key, r.slug, pr.id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var key, slug string
		var id int64
		if err := rows.Scan(&key, &slug, &id); err != nil {
			return err
		}
		if n := len(ds.projects); n == 0 || ds.projects[n-1] != key {
			ds.projects = append(ds.projects, key)
		}
		if n := len(ds.repos); n == 0 || ds.repos[n-1].Project != key || ds.repos[n-1].Slug != slug {
			ds.repos = append(ds.repos, RepoRef{Project: key, Slug: slug})
		}
		last := &ds.repos[len(ds.repos)-1]
		last.PRs = append(last.PRs, id)
	}
	return rows.Err()
}

// armDB makes an arm's copy of the seeded database and returns its URL:
// a SQLite file in dir, or a PostgreSQL database named name (a fresh
// copy of the template: any earlier one of that name is dropped).
func (r *couplingRunner) armDB(ctx context.Context, dir, name string) (string, error) {
	if r.pg == nil {
		db := filepath.Join(dir, "shoal.db")
		return db, copyDB(r.data.path, db)
	}
	admin, err := sql.Open("pgx", r.pg.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer admin.Close()
	name = "arm_" + name
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		return "", fmt.Errorf("dropping the last %s: %w", name, err)
	}
	// The seeding store's connections end as their backends exit, a
	// moment after it closed them: until then PostgreSQL refuses to copy
	// the template ("being accessed by other users").
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE "+pgTemplate)
		if err == nil {
			return r.pg.URL(name), nil
		}
		if !strings.Contains(err.Error(), "being accessed by other users") || time.Now().After(deadline) {
			return "", fmt.Errorf("copying the seeded database: %w", err)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// dbPID is the database server's process ID, 0 without one.
func (r *couplingRunner) dbPID() int {
	if r.pg == nil {
		return 0
	}
	return r.pg.PID()
}

// pgTemplate is the seeded PostgreSQL database the arms copy.
const pgTemplate = "shoal"

// copyDB copies the closed template database (and any journal beside it).
func copyDB(from, to string) error {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(from + suffix)
		if errors.Is(err, os.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(to+suffix, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// runSwitch is the switch stage: a cluster started in the first mode,
// the load generator running through the window with a timeline, and a
// switch to each next mode at each Every boundary of the window (each
// after the one before answered), through the nodes in turn.
func (r *couplingRunner) runSwitch(ctx context.Context, rep int) (sr SwitchRun, err error) {
	e := r.o.Experiment
	sw := e.Switch
	sr = SwitchRun{Repeat: rep}
	arm := Arm{Mode: sw.Modes[0], Nodes: sw.Nodes}
	name := fmt.Sprintf("switch %s×%d", strings.Join(sw.Modes, "→"), sw.Nodes)
	fail := func(err error) (SwitchRun, error) {
		sr.Error = err.Error()
		return sr, fmt.Errorf("%s: %w", name, err)
	}
	dir := filepath.Join(r.o.Dir, fmt.Sprintf("r%d-switch-%d", rep, sw.Nodes))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	db, err := r.armDB(ctx, dir, fmt.Sprintf("r%d_switch", rep))
	if err != nil {
		return fail(err)
	}
	r.progress.describe(fmt.Sprintf("repeat %d/%d, %s: starting", rep, r.o.Repeat, name))
	ac, err := startArm(ctx, armConfig{arm: arm, dir: dir, db: db, token: r.data.token, binary: r.nodeBinary(),
		procs: r.nodeProcs(arm.Nodes), invalidation: e.Invalidation, backups: *e.Backups, logger: r.o.Logger})
	if err != nil {
		return fail(err)
	}
	defer ac.Stop()
	sr.Nodes, sr.NodeProcs = ac.Nodes(), r.nodeProcs(arm.Nodes)
	if err := r.pins.nodes(ac.Nodes()); err != nil {
		return fail(err)
	}
	r.progress.describe(fmt.Sprintf("repeat %d/%d, %s: %d clients, a switch every %v", rep, r.o.Repeat, name, sw.Clients, sw.Every.D()))
	spec := r.spec(sr.Nodes, sw.Clients, fmt.Sprintf("r%dsw", rep))
	spec.Warmup, spec.Duration, spec.Bucket = *sw.Warmup, Duration(sw.Window()), sw.Bucket

	swCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var profiles sync.WaitGroup
	defer profiles.Wait()
	var mu sync.Mutex
	var once sync.Once
	done := make(chan struct{})
	started := false
	hook := func(ev LoadEvent) {
		if ev.Event != "measure" {
			return
		}
		once.Do(func() {
			mu.Lock()
			started = true
			mu.Unlock()
			r.profileWindow(swCtx, &profiles, sr.Nodes, spec.Tag, 0, time.Now())
			go func() {
				defer close(done)
				r.switchModes(swCtx, sr.Nodes, time.Now(), func(ev SwitchEvent) {
					mu.Lock()
					sr.Switches = append(sr.Switches, ev)
					i := len(sr.Switches)
					mu.Unlock()
					if ev.OK() {
						r.profileWindow(swCtx, &profiles, sr.Nodes, spec.Tag, i, time.Now())
					}
				})
			}()
		})
	}
	st, after, err := r.runStageHook(ctx, sr.Nodes, spec, hook)
	if err != nil {
		cancel()
	}
	mu.Lock()
	wait := started
	mu.Unlock()
	if wait {
		<-done // a switch still under way is bounded by its own timeout
	}
	mu.Lock()
	defer mu.Unlock()
	sr.PeakRSS = peakRSS(after)
	if err != nil {
		return fail(err)
	}
	sr.Stage = st
	sr.Stage.OthersShareAttempts = []float64{st.CPU.OthersShare}
	sr.Windows = SwitchWindows(sr, sw.Modes, sw.Every.D(), sw.Settle.D())
	if st.CPU.OthersShare > disturbedLimit(e.Quiet) {
		r.warnf("%s: other processes used %.0f%% of the machine (limit %.0f%%); its figures are disturbed", name,
			100*st.CPU.OthersShare, 100*disturbedLimit(e.Quiet))
	}
	if sr.FinalMode, err = r.clusterMode(ctx, sr.Nodes[0].HTTP); err != nil {
		return fail(fmt.Errorf("reading the cluster's mode after the window: %w", err))
	}
	return sr, nil
}

// profileWindow, with a profile directory (CouplingOptions.ProfileDir),
// takes a CPU profile of every node over the switch stage's steady
// window i (0-based: the i-th switch answered at from, or the stage's
// measurement began there): from switch.settle after from, for
// switch.every − switch.settle − 1 s, so that it ends before the next
// switch; files TAG-wNN-MODE-NODE.pprof. A profile that fails is warned
// about and left out.
func (r *couplingRunner) profileWindow(ctx context.Context, wg *sync.WaitGroup, nodes []NodePlacement, tag string, i int, from time.Time) {
	sw := r.o.Experiment.Switch
	secs := int((sw.Every.D() - sw.Settle.D() - time.Second) / time.Second)
	if r.o.ProfileDir == "" || secs < 1 || i >= len(sw.Modes) {
		return
	}
	if r.o.InProcess {
		nodes = nodes[:1]
	}
	for _, n := range nodes {
		wg.Go(func() {
			if sleepCtx(ctx, time.Until(from.Add(sw.Settle.D()))) != nil {
				return
			}
			err := r.profileTo(ctx, n, secs, fmt.Sprintf("%s-w%02d-%s-%s", tag, i+1, sw.Modes[i], n.Name))
			if err != nil && ctx.Err() == nil {
				r.warnf("switch stage: CPU profile of %s over window %d: %v", n.Name, i+1, err)
			}
		})
	}
}

// SwitchTimeout bounds one switch of the cluster's mode.
const SwitchTimeout = 2 * time.Minute

// switchModes switches the cluster to each next mode of the switch
// stage, the i-th at t0 + i×Every or when the switch before it answered,
// whichever is later, through node i-1 (mod the nodes); each switch is
// passed to note when it answered.
func (r *couplingRunner) switchModes(ctx context.Context, nodes []NodePlacement, t0 time.Time, note func(SwitchEvent)) {
	sw := r.o.Experiment.Switch
	for i := 1; i < len(sw.Modes); i++ {
		if err := sleepCtx(ctx, time.Until(t0.Add(time.Duration(i)*sw.Every.D()))); err != nil {
			return
		}
		via := nodes[(i-1)%len(nodes)]
		ev := SwitchEvent{From: sw.Modes[i-1], To: sw.Modes[i], Via: via.Name, At: time.Since(t0).Seconds()}
		begin := time.Now()
		ev.Status, ev.Epoch, ev.Error, ev.Retried = r.putMode(ctx, via.HTTP, sw.Modes[i])
		ev.Seconds = time.Since(begin).Seconds()
		note(ev)
	}
}

// putMode switches the cluster to mode through the node at httpAddr with
// the admin's token (modeswitch.Switch: an answer that leaves the outcome
// open is followed until the switch is seen complete or sent again) and
// returns when it has switched or SwitchTimeout has passed.
func (r *couplingRunner) putMode(ctx context.Context, httpAddr, mode string) (status int, epoch uint64, errText string, notes []string) {
	ctx, cancel := context.WithTimeout(ctx, SwitchTimeout)
	defer cancel()
	do := func(ctx context.Context, method string, body []byte) (int, []byte, error) {
		return r.adminCall(ctx, method, httpAddr, body)
	}
	res, err := modeswitch.Switch(ctx, do, mode, modeswitch.Options{})
	if err != nil {
		errText = err.Error()
	}
	return res.Status, res.Record.Epoch, errText, res.Open
}

// clusterMode is GET /v1/cache/mode's cluster record, "near (stable, epoch 9)".
func (r *couplingRunner) clusterMode(ctx context.Context, httpAddr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out struct {
		Cluster struct {
			Mode  string `json:"mode"`
			Phase string `json:"phase"`
			Epoch uint64 `json:"epoch"`
		} `json:"cluster"`
	}
	status, b, err := r.adminCall(ctx, http.MethodGet, httpAddr, nil)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("GET /v1/cache/mode: status %d: %s", status, strings.TrimSpace(string(b)))
	}
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (%s, epoch %d)", out.Cluster.Mode, out.Cluster.Phase, out.Cluster.Epoch), nil
}

// adminCall calls /v1/cache/mode on a node as the data set's admin and
// returns the status and the answer's body.
func (r *couplingRunner) adminCall(ctx context.Context, method, httpAddr string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+httpAddr+modeswitch.Path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.data.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}
