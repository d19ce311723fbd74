package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/internal/domain"
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
	o.Repeat = max(o.Repeat, 1)
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	res := &CouplingResults{Manifest: newManifest(o)}
	data, err := prepareData(ctx, filepath.Join(o.Dir, "template"), o.Experiment)
	if err != nil {
		return res, fmt.Errorf("seeding the template database: %w", err)
	}
	res.Manifest.Data = data.summary
	r := &couplingRunner{o: o, data: data, progress: newProgress(o)}
	defer r.progress.finish()
	for rep := 1; rep <= o.Repeat; rep++ {
		var run []ArmResult
		for i, arm := range o.Experiment.Arms() {
			ar, err := r.runArm(ctx, rep, i, arm)
			run = append(run, ar)
			if err != nil {
				res.Runs = append(res.Runs, run)
				res.finish(err)
				return res, err
			}
		}
		res.Runs = append(res.Runs, run)
	}
	res.finish(nil)
	return res, nil
}

// couplingRunner holds a run's shared state.
type couplingRunner struct {
	o        CouplingOptions
	data     *couplingData
	progress *progress
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
	db := filepath.Join(dir, "shoal.db")
	if err := copyDB(r.data.path, db); err != nil {
		return ar, err
	}
	r.progress.describe(fmt.Sprintf("repeat %d/%d, arm %d/%d %s: starting", rep, r.o.Repeat, idx+1, len(e.Arms()), arm.Name()))
	ac, err := startArm(ctx, armConfig{arm: arm, dir: dir, db: db, binary: r.nodeBinary(),
		invalidation: e.Invalidation, backups: *e.Backups, logger: r.o.Logger})
	if err != nil {
		ar.Error = err.Error()
		return ar, fmt.Errorf("%s: %w", arm.Name(), err)
	}
	defer ac.Stop()
	ar.Nodes = ac.Nodes()
	var last counterSnapshot
	defer func() { ar.PeakRSS = peakRSS(last) }()
	for si, clients := range e.Stages.Clients {
		r.progress.describe(fmt.Sprintf("repeat %d/%d, arm %d/%d %s, stage %d/%d: %d clients",
			rep, r.o.Repeat, idx+1, len(e.Arms()), arm.Name(), si+1, len(e.Stages.Clients), clients))
		st, after, err := r.quietStage(ctx, ar.Nodes, clients, fmt.Sprintf("r%d%s%ds%d", rep, arm.Mode[:1], arm.Nodes, si))
		if err != nil {
			ar.Error = err.Error()
			return ar, fmt.Errorf("%s, %d clients: %w", arm.Name(), clients, err)
		}
		ar.Stages = append(ar.Stages, st)
		last = after
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
	var before, after counterSnapshot
	var snapErr error
	onEvent := func(ev LoadEvent) {
		var err error
		switch ev.Event {
		case "measure":
			before, err = takeSnapshot(ctx, nodes)
		case "result":
			after, err = takeSnapshot(ctx, nodes)
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
	if err == nil {
		err = snapErr
	}
	if err != nil {
		return StageResult{}, after, err
	}
	return stageFigures(spec, lr, before, after, r.o.LoadgenInProcess || r.o.InProcess), after, nil
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
func prepareData(ctx context.Context, dir string, e *Experiment) (*couplingData, error) {
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ds := &couplingData{path: filepath.Join(dir, "shoal.db")}
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
