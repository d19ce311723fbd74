package chaos

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shoal-dev/shoal/internal/domain"
)

// recPrefix is where the kv.record-run job leaves one key per run.
const recPrefix = "chaos/rec/"

// recEvery is the recording job's interval.
const recEvery = time.Second

// settleFor is how long the checker waits, load stopped and every node
// serving, before it compares the caches with the database: a lease and a
// margin, and the async bound in LOCAL async mode.
func settleFor(s Setting) time.Duration {
	if s.Strict {
		return 3 * time.Second
	}
	return AsyncBound + time.Second
}

func runSetting(ctx context.Context, cfg Config, s Setting, dir string, rng *rand.Rand) (*SettingReport, error) {
	sr := &SettingReport{Setting: s, LoadBefore: loadAvg()}
	began := time.Now()
	e, err := startEnv(ctx, cfg, s, dir)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	if e.partErr != nil {
		sr.Partitions = "skipped: " + e.partErr.Error()
		fmt.Fprintf(cfg.Log, "   partitions %s\n", sr.Partitions)
	} else {
		sr.Partitions = fmt.Sprintf("each node in its own network namespace on %v", e.net.Subnet())
	}
	sr.Database = "SQLite, one file the nodes share"
	if e.postgres() {
		sr.Database = "PostgreSQL at " + e.pg.Addr()
		if e.net != nil {
			sr.Database += ", in a network namespace of its own"
		}
	}
	sr.StartupTime = time.Since(began)
	t, err := e.pickTracked(ctx)
	if err != nil {
		return nil, err
	}
	var db *sql.DB
	if e.postgres() {
		db, err = sql.Open("pgx", e.dbURL)
	} else {
		db, err = sql.Open("sqlite", domain.SQLiteDSN(e.dbURL, 10*time.Second))
	}
	if err != nil {
		return nil, err
	}
	defer db.Close()
	e.rec = newRecorder(s.Strict, t.prs)
	rec := e.rec
	leaders := e.watchLeaders(ctx, 250*time.Millisecond)
	defer leaders.close(rec)
	sr.TrackedPRs = len(t.prs)

	if err := e.scheduleRecorder(ctx); err != nil {
		return nil, err
	}
	var g *gitChecker
	if cfg.Profile.Git {
		if g, err = newGitChecker(ctx, e, filepath.Join(dir, "git-client")); err != nil {
			return nil, fmt.Errorf("git: %w", err)
		}
	}

	wctx, stop := context.WithCancel(ctx)
	w := &workload{e: e, t: t, rec: rec, db: db, load: cfg.Profile.Load, seed: rng.Uint64()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(wctx)
	}()
	gitDone := make(chan struct{})
	if g != nil {
		go func() {
			defer close(gitDone)
			g.run(wctx)
		}()
	} else {
		close(gitDone)
	}
	stopLoad := func() {
		stop()
		<-done
		<-gitDone
	}

	runErr := runSchedule(ctx, cfg, e, rng, sr)
	if runErr == nil {
		sleepCtx(ctx, cfg.Profile.Tail)
	}
	stopLoad()
	sr.LoadDuration, sr.LoadStart = time.Since(rec.start), rec.start
	e.mu.Lock()
	sr.Faults = append(sr.Faults, e.extras...)
	e.mu.Unlock()
	sort.SliceStable(sr.Faults, func(a, b int) bool { return sr.Faults[a].Start < sr.Faults[b].Start })
	if runErr != nil {
		leaders.close(rec)
		return sr.finish(rec), runErr
	}
	fmt.Fprintf(cfg.Log, "   load stopped; settling and checking\n")
	if err := e.waitServing(ctx, 120*time.Second); err != nil {
		leaders.close(rec)
		return sr.finish(rec), fmt.Errorf("after the schedule: %w", err)
	}
	sleepCtx(ctx, settleFor(s))
	if ctx.Err() != nil {
		return sr.finish(rec), ctx.Err()
	}
	var errs []error
	errs = append(errs, checkOneLeader(ctx, e, 30*time.Second))
	sr.LeaderTerms = leaders.terms()
	leaders.close(rec)
	errs = append(errs, checkFinalKV(ctx, w))
	errs = append(errs, checkDatabase(ctx, w))
	errs = append(errs, checkCaches(ctx, w))
	sr.Scheduler, err = checkScheduler(ctx, e)
	errs = append(errs, err)
	if g != nil {
		sr.Git = g.report()
		errs = append(errs, g.checkFinal(ctx))
	}
	sr.KV = checkLinearizable(rec, dir)
	sr.LoadAfter = loadAvg()
	return sr.finish(rec), errors.Join(errs...)
}

// runSchedule injects the profile's faults in order, measuring each one's
// recovery.
func runSchedule(ctx context.Context, cfg Config, e *Env, rng *rand.Rand, sr *SettingReport) error {
	sleepCtx(ctx, cfg.Profile.Warmup)
	for k, f := range cfg.Profile.Faults {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if k > 0 {
			sleepCtx(ctx, cfg.Profile.Gap)
		}
		inj, _ := lookupFault(f.Kind)
		fr := &FaultRecord{Kind: f.Kind, Hold: f.Hold}
		e.faultMu.Lock()
		err := injectOne(ctx, e, rng, k, f, inj, fr)
		e.faultMu.Unlock()
		if err != nil {
			return err
		}
		sr.Faults = append(sr.Faults, fr)
		if fr.Skipped != "" {
			fmt.Fprintf(cfg.Log, "   fault %d %s: %s\n", k+1, f.Kind, fr.Skipped)
			continue
		}
		fmt.Fprintf(cfg.Log, "   fault %d %s %s: held %v, healed in %v, serving %v after the heal began\n", k+1, f.Kind, fr.Target,
			f.Hold, fr.HealTime.Round(time.Millisecond), fr.Recovery.Round(time.Millisecond))
		if fr.Detail != "" {
			fmt.Fprintf(cfg.Log, "   fault %d %s: %s\n", k+1, f.Kind, fr.Detail)
		}
	}
	return nil
}

// injectOne injects one fault, holds it, heals it and waits until every
// node serves again.
func injectOne(ctx context.Context, e *Env, rng *rand.Rand, k int, f Fault, inj Injector, fr *FaultRecord) error {
	start := time.Now()
	in, err := inj(ctx, e, rng, f)
	if errors.Is(err, ErrSkipped) {
		fr.Skipped = err.Error()
		return nil
	}
	if err != nil {
		return fmt.Errorf("fault %d (%s): %w", k+1, f.Kind, err)
	}
	fr.Target, fr.start = in.Target, start
	fr.Start = start.Sub(e.rec.start)
	sleepCtx(ctx, f.Hold)
	healStart := time.Now()
	if err := in.Heal(ctx); err != nil {
		return fmt.Errorf("fault %d (%s %s): healing: %w", k+1, f.Kind, in.Target, err)
	}
	fr.HealTime = time.Since(healStart)
	fr.healed = time.Now()
	if in.Detail != nil {
		fr.Detail = in.Detail()
	}
	if err := e.waitServing(ctx, 120*time.Second); err != nil {
		e.rec.violation(Violation{Check: "recovery", Detail: fmt.Sprintf("fault %d (%s %s): the cluster did not serve again within 120 s: %v", k+1, f.Kind, in.Target, err)})
		return fmt.Errorf("fault %d (%s %s): %w", k+1, f.Kind, in.Target, err)
	}
	fr.recovered = time.Now()
	fr.Recovery = fr.recovered.Sub(healStart)
	return nil
}

// scheduleRecorder schedules the kv.record-run job, once per cluster.
func (e *Env) scheduleRecorder(ctx context.Context) error {
	job := map[string]any{"runner": "kv.record-run", "mode": "cluster", "params": base64.StdEncoding.EncodeToString([]byte(recPrefix)),
		"schedule": map[string]string{"kind": "interval", "every": recEvery.String(), "first": "2020-01-01T00:00:00Z"}}
	b, _ := json.Marshal(job)
	// A PUT of a job is idempotent; on a machine busy compiling, its raft
	// commit can outlast the probe's timeout, so it is retried.
	if err := retryIdempotent(ctx, setupRetry, func(ctx context.Context) (int, []byte, error) {
		return doReq(ctx, e.probe, http.MethodPut, "http://"+e.HTTP(1)+"/v1/jobs/chaos-record", b, true)
	}); err != nil {
		return fmt.Errorf("scheduling the recording job: %w", err)
	}
	return nil
}

// setupRetry bounds the retries of an idempotent setup request.
const setupRetry = 60 * time.Second

// retryIdempotent calls do until it answers 200, for at most within:
// again after a transport error (a timeout, a refused connection) or a
// 5xx answer, with a growing pause, and not after another answer (a 4xx
// says the request is wrong, and asking again will not mend it). Only for
// requests that are safe to repeat.
func retryIdempotent(ctx context.Context, within time.Duration, do func(context.Context) (int, []byte, error)) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	pause := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		code, body, err := do(ctx)
		if err == nil && code == http.StatusOK {
			return nil
		}
		last := fmt.Errorf("attempt %d: %d %s %v", attempt, code, bytes.TrimSpace(body), err)
		if err == nil && code < 500 {
			return last
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (gave up after %v)", last, within)
		}
		sleepCtx(ctx, pause)
		pause = min(2*pause, 4*time.Second)
	}
}

// checkScheduler pauses the job, lists its runs and checks that no fire
// time ran twice.
func checkScheduler(ctx context.Context, e *Env) (SchedulerReport, error) {
	var r SchedulerReport
	code, body, err := doReq(ctx, e.probe, http.MethodPost, "http://"+e.HTTP(1)+"/v1/jobs/chaos-record/pause", nil, true)
	if err != nil || code != http.StatusOK {
		return r, fmt.Errorf("pausing the recording job: %d %s %v", code, body, err)
	}
	sleepCtx(ctx, 2*recEvery) // a run in flight finishes
	code, body, err = doReq(ctx, e.probe, http.MethodGet, "http://"+e.HTTP(1)+"/v1/kv?prefix="+recPrefix, nil, true)
	if err != nil || code != http.StatusOK {
		return r, fmt.Errorf("listing the recorded runs: %d %s %v", code, body, err)
	}
	var list []struct{ Key string }
	if err := json.Unmarshal(body, &list); err != nil {
		return r, err
	}
	runs := map[string][]string{}
	var fires []string
	for _, kv := range list {
		parts := strings.Split(strings.TrimPrefix(kv.Key, recPrefix), "/")
		if len(parts) != 3 {
			return r, fmt.Errorf("recorded run key %q", kv.Key)
		}
		if _, ok := runs[parts[0]]; !ok {
			fires = append(fires, parts[0])
		}
		runs[parts[0]] = append(runs[parts[0]], kv.Key)
	}
	sort.Strings(fires)
	r.Runs, r.FireTimes = len(list), len(fires)
	for _, f := range fires {
		if len(runs[f]) > 1 {
			r.Duplicates++
			e.rec.violation(Violation{Check: "scheduler exactly once", Detail: fmt.Sprintf("fire time %s ran %d times", f, len(runs[f])), Ops: runs[f]})
		}
	}
	if len(fires) > 1 {
		first, err1 := strconv.ParseInt(fires[0], 10, 64)
		last, err2 := strconv.ParseInt(fires[len(fires)-1], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return r, fmt.Errorf("recorded fire times: %w", err)
		}
		span := time.Duration(last - first)
		r.Missed = int(span/recEvery) + 1 - len(fires)
	}
	return r, nil
}

// checkFinalKV reads every key through every node, closing the history.
func checkFinalKV(ctx context.Context, w *workload) error {
	for k := 0; k < w.load.KVKeys; k++ {
		for i := 1; i <= w.e.Nodes(); i++ {
			key := fmt.Sprintf("chaos/kv/k%d", k)
			if _, known := w.kvDo(ctx, i, 1000+i, kvInput{Key: key, Op: kvGet}); !known {
				return fmt.Errorf("final read of %s through node%d failed", key, i)
			}
		}
	}
	return nil
}

// checkDatabase: every acknowledged update and comment is in the database.
func checkDatabase(ctx context.Context, w *workload) error {
	rec := w.rec
	rec.mu.Lock()
	prs := map[int64][]prAck{}
	for pr, a := range rec.prs {
		prs[pr] = slices.Clone(a)
	}
	comments := map[int64][]commentAck{}
	for pr, a := range rec.comments {
		comments[pr] = slices.Clone(a)
	}
	rec.mu.Unlock()
	for pr, acks := range prs {
		if len(acks) == 0 {
			continue
		}
		v, err := w.dbVersion(ctx, pr)
		if err != nil {
			return err
		}
		last := acks[len(acks)-1]
		if v < last.version {
			rec.violation(Violation{Check: "acknowledged write lost", Detail: fmt.Sprintf("pull request %d is at version %d in the database; version %d was acknowledged", pr, v, last.version),
				Ops: []string{fmt.Sprintf("update pr %d -> v%d %q via node%d, acked %s", pr, last.version, last.title, last.node, rec.ms(last.at))}})
		}
	}
	for pr, acks := range comments {
		if len(acks) == 0 {
			continue
		}
		rows, err := w.db.QueryContext(ctx, rebind(w.e.postgres(), "SELECT text FROM comments WHERE pull_request_id = ?"), pr)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for rows.Next() {
			var t string
			if err := rows.Scan(&t); err != nil {
				rows.Close()
				return err
			}
			have[t] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, a := range acks {
			if !have[a.text] {
				rec.violation(Violation{Check: "acknowledged write lost", Detail: fmt.Sprintf("comment %q on pull request %d is not in the database", a.text, pr),
					Ops: []string{fmt.Sprintf("add comment %q to pr %d via node%d, acked %s", a.text, pr, a.node, rec.ms(a.at))}})
			}
		}
	}
	return nil
}

// checkCaches reads every tracked pull request and comment list through
// every node and compares them with the database. A difference is
// re-read once, a few seconds later, to say whether it lasts.
func checkCaches(ctx context.Context, w *workload) error {
	type row struct {
		version  int64
		title    string
		comments []string // "id text", sorted
	}
	dbRow := func(pr int64) (row, error) {
		var r row
		if err := w.db.QueryRowContext(ctx, rebind(w.e.postgres(), "SELECT version, title FROM pull_requests WHERE id = ?"), pr).Scan(&r.version, &r.title); err != nil {
			return r, err
		}
		rows, err := w.db.QueryContext(ctx, rebind(w.e.postgres(), "SELECT id, text FROM comments WHERE pull_request_id = ? ORDER BY id"), pr)
		if err != nil {
			return r, err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var t string
			if err := rows.Scan(&id, &t); err != nil {
				return r, err
			}
			r.comments = append(r.comments, fmt.Sprintf("%d %s", id, t))
		}
		return r, rows.Err()
	}
	nodeRow := func(i int, pr int64) (row, error) {
		var r row
		var p struct {
			Version int64  `json:"version"`
			Title   string `json:"title"`
		}
		if err := w.e.getJSON(ctx, i, w.t.path[pr], &p); err != nil {
			return r, err
		}
		r.version, r.title = p.Version, p.Title
		var page commentPage
		if err := w.e.getJSON(ctx, i, w.t.path[pr]+"/comments?start=0&limit=1000", &page); err != nil {
			return r, err
		}
		if !page.IsLastPage {
			return r, fmt.Errorf("pull request %d has over 1000 comments", pr)
		}
		for _, c := range page.Values {
			r.comments = append(r.comments, fmt.Sprintf("%d %s", c.ID, c.Text))
		}
		sort.Strings(r.comments)
		return r, nil
	}
	differ := func(a, b row) string {
		var d []string
		if a.version != b.version || a.title != b.title {
			d = append(d, fmt.Sprintf("pull request v%d %q, database v%d %q", a.version, a.title, b.version, b.title))
		}
		sb := slices.Clone(b.comments)
		sort.Strings(sb)
		if !slices.Equal(a.comments, sb) {
			d = append(d, fmt.Sprintf("%d comments, database %d", len(a.comments), len(sb)))
		}
		return strings.Join(d, "; ")
	}
	for _, pr := range w.t.prs {
		want, err := dbRow(pr)
		if err != nil {
			return err
		}
		for i := 1; i <= w.e.Nodes(); i++ {
			got, err := nodeRow(i, pr)
			if err != nil {
				return fmt.Errorf("reading pull request %d through node%d after the run: %w", pr, i, err)
			}
			d := differ(got, want)
			if d == "" {
				continue
			}
			sleepCtx(ctx, 3*time.Second)
			again, err := nodeRow(i, pr)
			lasts := "gone 3 s later"
			if err == nil && differ(again, want) != "" {
				lasts = "still there 3 s later"
			}
			w.rec.violation(Violation{Check: "cache differs from the database after settling", Node: i,
				Detail: fmt.Sprintf("pull request %d through node%d: %s (%s)", pr, i, d, lasts)})
		}
	}
	return nil
}

// checkLinearizable runs porcupine over the kv history.
func checkLinearizable(rec *recorder, dir string) KVReport {
	rec.mu.Lock()
	ops := slices.Clone(rec.kv)
	rec.mu.Unlock()
	r := KVReport{Ops: len(ops)}
	for _, op := range ops {
		if op.Output.(kvOutput).Unknown {
			r.Unknown++
		}
	}
	if dir != "" {
		dumpKV(filepath.Join(dir, "kv-history.json"), ops)
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, kvCheckTimeout)
	r.CheckTime = time.Since(start)
	r.Result = string(res)
	if res == porcupine.Illegal {
		v := Violation{Check: "kv linearizability", Detail: "porcupine: the kv history is not linearizable"}
		parts := kvModel.Partition(ops)
		for pi, lins := range info.PartialLinearizationsOperations() {
			longest := 0
			var best []porcupine.Operation
			for _, l := range lins {
				if len(l) > longest {
					longest, best = len(l), l
				}
			}
			if pi >= len(parts) || longest >= len(parts[pi]) || len(parts[pi]) == 0 {
				continue
			}
			key := parts[pi][0].Input.(kvInput).Key
			v.Detail += fmt.Sprintf("; key %s: %d of its %d operations linearize", key, longest, len(parts[pi]))
			for _, op := range best[max(0, len(best)-4):] {
				v.Ops = append(v.Ops, fmt.Sprintf("%s via client %d, %s..%s", kvModel.DescribeOperation(op.Input, op.Output), op.ClientId,
					nsAt(op.Call), nsAt(op.Return)))
			}
			// the operations that could come next and did not fit
			inBest := map[int64]bool{}
			for _, op := range best {
				inBest[op.Call] = true
			}
			n := 0
			for _, op := range parts[pi] {
				if !inBest[op.Call] && n < 4 {
					v.Ops = append(v.Ops, fmt.Sprintf("not linearizable after those: %s via client %d, %s..%s", kvModel.DescribeOperation(op.Input, op.Output),
						op.ClientId, nsAt(op.Call), nsAt(op.Return)))
					n++
				}
			}
		}
		if dir != "" {
			path := filepath.Join(dir, "kv-linearizability.html")
			if err := porcupine.VisualizePath(kvModel, info, path); err == nil {
				v.Detail += "; visualization: " + path
			}
		}
		rec.violation(v)
	}
	return r
}

// nsAt prints an offset from the start of the history.
func nsAt(ns int64) string {
	if ns == 1<<63-1 {
		return "never answered"
	}
	return fmt.Sprintf("t=%.3fs", time.Duration(ns).Seconds())
}

// kvCheckTimeout bounds porcupine; past it the result is Unknown
// (inconclusive), not a violation.
const kvCheckTimeout = 90 * time.Second

// dumpKV writes the kv history, for a look at a failed or slow check.
func dumpKV(path string, ops []porcupine.Operation) {
	type op struct {
		Client       int
		In           kvInput
		Out          kvOutput
		Call, Return int64
	}
	out := make([]op, len(ops))
	for k, o := range ops {
		out[k] = op{o.ClientId, o.Input.(kvInput), o.Output.(kvOutput), o.Call, o.Return}
	}
	if b, err := json.Marshal(out); err == nil {
		os.WriteFile(path, b, 0o644)
	}
}
