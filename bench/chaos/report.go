package chaos

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is a whole run.
type Report struct {
	Profile    string           `json:"profile"`
	Nodes      int              `json:"nodes"`
	Seed       uint64           `json:"seed"`
	Started    time.Time        `json:"started"`
	Finished   time.Time        `json:"finished"`
	LoadBefore string           `json:"load_before"` // /proc/loadavg
	LoadAfter  string           `json:"load_after"`
	Settings   []*SettingReport `json:"settings"`
}

// Violations counts the violations of every setting.
func (r *Report) Violations() int {
	n := 0
	for _, s := range r.Settings {
		n += len(s.Violations)
	}
	return n
}

// SettingReport is one setting's run.
type SettingReport struct {
	Setting      Setting       `json:"setting"`
	Partitions   string        `json:"partitions"`
	StartupTime  time.Duration `json:"startup_ns"`
	LoadDuration time.Duration `json:"load_ns"`
	// LoadStart is when the load began: t=0 of the times the report
	// gives, to match them with the nodes' logs.
	LoadStart  time.Time       `json:"load_start"`
	TrackedPRs int             `json:"tracked_prs"`
	Ops        OpCounts        `json:"ops"`
	Violations []Violation     `json:"violations"`
	Faults     []*FaultRecord  `json:"faults"`
	Staleness  Staleness       `json:"staleness"`
	KV         KVReport        `json:"kv"`
	Scheduler  SchedulerReport `json:"scheduler"`
	// LeaderTerms is how many raft terms saw a leader during the run
	// (each with one leader, or a "one leader" violation says otherwise).
	LeaderTerms int        `json:"leader_terms"`
	Database    string     `json:"database"`
	Git         *GitReport `json:"git,omitempty"`
	LoadBefore  string     `json:"load_before"`
	LoadAfter   string     `json:"load_after"`
}

// Violation is one broken promise, with the operations involved.
type Violation struct {
	Check  string   `json:"check"`
	Node   int      `json:"node,omitempty"`
	Detail string   `json:"detail"`
	Ops    []string `json:"ops,omitempty"`
}

// FaultRecord is one injected fault.
type FaultRecord struct {
	Kind    FaultKind     `json:"kind"`
	Target  string        `json:"target,omitempty"`
	Skipped string        `json:"skipped,omitempty"`
	Start   time.Duration `json:"start_ns"` // from the start of the load
	Hold    time.Duration `json:"hold_ns"`
	// HealTime is how long healing took (a restart until the node was
	// ready); Recovery from the start of healing until every node served
	// a REST read and a kv read and saw every member alive.
	HealTime time.Duration `json:"heal_ns"`
	Recovery time.Duration `json:"recovery_ns"`
	// The error window: operations that started between the fault and the
	// recovery, how many failed, and when the first and last failure
	// started (from the fault's start).
	Ops         int           `json:"ops"`
	Failed      int           `json:"failed"`
	FirstFailed time.Duration `json:"first_failed_ns"`
	LastFailed  time.Duration `json:"last_failed_ns"`
	// FailedByKind counts the failed operations per kind; FailedByError
	// per error (kind, then the error as failure classifies it).
	FailedByKind  map[string]int `json:"failed_by_kind,omitempty"`
	FailedByError map[string]int `json:"failed_by_error,omitempty"`
	// Detail is what the injector reports of the fault after the heal
	// (the mode-switch fault: each switch's time).
	Detail string `json:"detail,omitempty"`

	start, healed, recovered time.Time
}

// Staleness is what the reads saw of acknowledged writes.
type Staleness struct {
	Reads int `json:"reads"`
	// StaleReads missed an acknowledged write in a setting that does not
	// promise never-stale reads (LOCAL async); Max and P99 are how long
	// after the acknowledgement such reads still began.
	StaleReads int           `json:"stale_reads"`
	Max        time.Duration `json:"max_ns"`
	P99        time.Duration `json:"p99_ns"`
	Bound      time.Duration `json:"bound_ns"`
	// DuringFaults of the stale reads missed a write acknowledged while a
	// fault was in place; MaxAfterHeal is the longest such a read began
	// after that fault was healed.
	DuringFaults int           `json:"during_faults"`
	MaxAfterHeal time.Duration `json:"max_after_heal_ns"`
	// ByFault splits DuringFaults by the kind of the fault.
	ByFault map[FaultKind]*StaleByFault `json:"by_fault,omitempty"`
}

// KVReport is the linearizability check.
type KVReport struct {
	Ops       int           `json:"ops"`
	Unknown   int           `json:"unknown"` // writes with no answer: open calls
	Result    string        `json:"result"`  // Ok, Illegal or Unknown (porcupine timed out)
	CheckTime time.Duration `json:"check_ns"`
}

// SchedulerReport is the recording job's runs.
type SchedulerReport struct {
	Runs       int `json:"runs"`
	FireTimes  int `json:"fire_times"`
	Duplicates int `json:"duplicates"`
	// Missed fire times between the first and last run (a restart of the
	// whole cluster skips some: the scheduler does not run missed times).
	Missed int `json:"missed"`
}

// finish fills the counts from the recorder.
func (sr *SettingReport) finish(rec *recorder) *SettingReport {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	sr.Ops = OpCounts{}
	for k, v := range rec.counts {
		c := *v
		sr.Ops[k] = &c
	}
	var wins []window
	for _, f := range sr.Faults {
		if f.Skipped == "" && !f.start.IsZero() {
			healed := f.healed
			if healed.IsZero() { // never healed: the run stopped
				healed = time.Now()
			}
			wins = append(wins, window{kind: f.Kind, start: f.start, healed: healed})
		}
	}
	lags, maxLag, afterHeal, inFault, byFault := rec.judgeStale(wins)
	sr.Violations = slices.Clone(rec.violations)
	sr.Staleness = Staleness{Reads: rec.reads, StaleReads: len(lags), Max: maxLag, Bound: AsyncBound, DuringFaults: inFault, MaxAfterHeal: afterHeal, ByFault: byFault}
	if n := len(lags); n > 0 {
		slices.Sort(lags)
		sr.Staleness.P99 = lags[min(n-1, n*99/100)]
	}
	for _, f := range sr.Faults {
		if f.Skipped != "" || f.recovered.IsZero() {
			continue
		}
		f.FailedByKind, f.FailedByError = map[string]int{}, map[string]int{}
		for _, ev := range rec.events {
			if ev.start.Before(f.start) || ev.start.After(f.recovered) {
				continue
			}
			f.Ops++
			if ev.ok {
				continue
			}
			at := ev.start.Sub(f.start)
			if f.Failed == 0 || at < f.FirstFailed {
				f.FirstFailed = at
			}
			if at > f.LastFailed {
				f.LastFailed = at
			}
			f.Failed++
			f.FailedByKind[ev.kind]++
			f.FailedByError[ev.kind+": "+ev.why]++
		}
	}
	return sr
}

// WriteText prints the report for people.
func WriteText(w io.Writer, r *Report) {
	fmt.Fprintf(w, "chaos profile %q, %d nodes, seed %d, %s to %s (load average %s before, %s after)\n",
		r.Profile, r.Nodes, r.Seed, r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339), r.LoadBefore, r.LoadAfter)
	for _, s := range r.Settings {
		fmt.Fprintf(w, "\n== %s: cache mode %s, --invalidation %s (%s)\n", s.Setting.Name, s.Setting.CacheMode, s.Setting.Invalidation,
			map[bool]string{true: "promise: never stale", false: fmt.Sprintf("promise: stale at most %v", AsyncBound)}[s.Setting.Strict])
		fmt.Fprintf(w, "partitions: %s\n", s.Partitions)
		if s.Database != "" {
			fmt.Fprintf(w, "database: %s\n", s.Database)
		}
		fmt.Fprintf(w, "load %v from %s (t=0) over %d tracked pull requests; cluster start %v; load average %s before, %s after\n",
			s.LoadDuration.Round(time.Second), s.LoadStart.UTC().Format("15:04:05.000Z"), s.TrackedPRs, s.StartupTime.Round(100*time.Millisecond), s.LoadBefore, s.LoadAfter)
		kinds := make([]string, 0, len(s.Ops))
		for k := range s.Ops {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		var parts []string
		for _, k := range kinds {
			parts = append(parts, fmt.Sprintf("%s %d/%d", k, s.Ops[k].OK, s.Ops[k].OK+s.Ops[k].Failed))
		}
		fmt.Fprintf(w, "operations (ok/all): %d: %s\n", s.Ops.Total(), strings.Join(parts, ", "))
		st := s.Staleness
		if s.Setting.Strict {
			fmt.Fprintf(w, "reads judged: %d (never-stale promise)\n", st.Reads)
		} else {
			fmt.Fprintf(w, "reads judged: %d; stale: %d, staleness max %v, p99 %v (bound %v); %d missed a write acknowledged during a fault, at most %v after its heal\n",
				st.Reads, st.StaleReads, st.Max.Round(time.Millisecond), st.P99.Round(time.Millisecond), st.Bound, st.DuringFaults, st.MaxAfterHeal.Round(time.Millisecond))
		}
		if len(st.ByFault) > 0 {
			var parts []string
			for k, b := range st.ByFault {
				parts = append(parts, fmt.Sprintf("%s: %d (max %v)", k, b.Reads, b.Max.Round(time.Millisecond)))
			}
			sort.Strings(parts)
			fmt.Fprintf(w, "stale reads by the fault in place at the write: %s\n", strings.Join(parts, ", "))
		}
		fmt.Fprintf(w, "kv: %d operations (%d unknown outcomes, open calls), linearizability %s in %v\n", s.KV.Ops, s.KV.Unknown, s.KV.Result,
			s.KV.CheckTime.Round(time.Millisecond))
		fmt.Fprintf(w, "raft: %d terms saw a leader, one each unless a violation says otherwise\n", s.LeaderTerms)
		fmt.Fprintf(w, "scheduler: %d runs of %d fire times, %d run twice, %d fire times missed\n", s.Scheduler.Runs, s.Scheduler.FireTimes,
			s.Scheduler.Duplicates, s.Scheduler.Missed)
		if g := s.Git; g != nil {
			fmt.Fprintf(w, "git: %d pushes acknowledged (%d failed, %d through a node killed right after), %d ref checks through every node\n",
				g.Pushes, g.PushFailed, g.PushesThenKilled, g.RefChecks)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FAULT\tTARGET\tAT\tHOLD\tHEAL\tRECOVERY\tOPS\tFAILED\tERROR WINDOW")
		for _, f := range s.Faults {
			if f.Skipped != "" {
				fmt.Fprintf(tw, "%s\t%s\t\t\t\t\t\t\t\n", f.Kind, f.Skipped)
				continue
			}
			win := "-"
			if f.Failed > 0 {
				win = fmt.Sprintf("%v..%v %v", f.FirstFailed.Round(time.Millisecond), f.LastFailed.Round(time.Millisecond), kindCounts(f.FailedByKind))
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%v\t%v\t%d\t%d\t%s\n", f.Kind, f.Target, f.Start.Round(100*time.Millisecond), f.Hold,
				f.HealTime.Round(time.Millisecond), f.Recovery.Round(time.Millisecond), f.Ops, f.Failed, win)
		}
		tw.Flush()
		for _, f := range s.Faults {
			if f.Detail != "" {
				fmt.Fprintf(w, "%s at %v: %s\n", f.Kind, f.Start.Round(100*time.Millisecond), f.Detail)
			}
			if len(f.FailedByError) > 0 {
				fmt.Fprintf(w, "%s at %v: failed operations by error:\n", f.Kind, f.Start.Round(100*time.Millisecond))
				for _, line := range errorCounts(f.FailedByError) {
					fmt.Fprintf(w, "    %s\n", line)
				}
			}
		}
		fmt.Fprintf(w, "violations: %d\n", len(s.Violations))
		for k, v := range s.Violations {
			if k == 50 {
				fmt.Fprintf(w, "  ... and %d more (see the JSON report)\n", len(s.Violations)-k)
				break
			}
			fmt.Fprintf(w, "  [%s] %s\n", v.Check, v.Detail)
			for _, op := range v.Ops {
				fmt.Fprintf(w, "      %s\n", op)
			}
		}
	}
	fmt.Fprintf(w, "\ntotal violations: %d\n", r.Violations())
}

// errorCounts lists "N× error", the most frequent first.
func errorCounts(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(a, b int) bool {
		if m[ks[a]] != m[ks[b]] {
			return m[ks[a]] > m[ks[b]]
		}
		return ks[a] < ks[b]
	})
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = fmt.Sprintf("%d× %s", m[k], k)
	}
	return out
}

func kindCounts(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return "(" + strings.Join(parts, " ") + ")"
}

// WriteMarkdown prints a report as the tables of RELIABILITY.md: one row
// per setting, and per setting and kind of fault the recovery times and
// error windows.
func WriteMarkdown(w io.Writer, r *Report) {
	fmt.Fprintf(w, "Profile `%s`, %d nodes, seed %d, %s to %s; load average %s before, %s after.\n\n",
		r.Profile, r.Nodes, r.Seed, r.Started.Format("2006-01-02 15:04"), r.Finished.Format("15:04 MST"), r.LoadBefore, r.LoadAfter)
	fmt.Fprintln(w, "| setting | load | operations (failed) | reads judged | stale reads (max, p99) | kv ops (unknown) | linearizable | scheduler runs (twice, missed) | git pushes (then killed) | violations |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, s := range r.Settings {
		failed := 0
		for _, c := range s.Ops {
			failed += c.Failed
		}
		stale := "— (never-stale promise)"
		if !s.Setting.Strict {
			stale = fmt.Sprintf("%d (%v, %v); %d during faults, at most %v after the heal", s.Staleness.StaleReads, s.Staleness.Max.Round(time.Millisecond),
				s.Staleness.P99.Round(time.Millisecond), s.Staleness.DuringFaults, s.Staleness.MaxAfterHeal.Round(time.Millisecond))
		}
		git := "—"
		if s.Git != nil {
			git = fmt.Sprintf("%d (%d)", s.Git.Pushes, s.Git.PushesThenKilled)
		}
		fmt.Fprintf(w, "| %s | %v | %d (%d) | %d | %s | %d (%d) | %s | %d (%d, %d) | %s | %d |\n", s.Setting.Name,
			s.LoadDuration.Round(time.Second), s.Ops.Total(), failed, s.Staleness.Reads, stale, s.KV.Ops, s.KV.Unknown, s.KV.Result,
			s.Scheduler.Runs, s.Scheduler.Duplicates, s.Scheduler.Missed, git, len(s.Violations))
	}
	for _, s := range r.Settings {
		if len(s.Staleness.ByFault) == 0 {
			continue
		}
		var parts []string
		for k, b := range s.Staleness.ByFault {
			parts = append(parts, fmt.Sprintf("%s %d (max %v)", k, b.Reads, b.Max.Round(time.Millisecond)))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "\n%s: stale reads of writes acknowledged during a fault, by the fault: %s.\n", s.Setting.Name, strings.Join(parts, ", "))
	}
	fmt.Fprintln(w, "\nRecovery (from the heal — SIGCONT, restart, partition removed — until every node serves a REST read and a kv read and sees every member alive) and error windows (operations started from the fault until that moment that failed):")
	fmt.Fprintln(w, "\n| setting | fault | times | recovery median (lower) | recovery max | failed ops / ops in the windows |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, s := range r.Settings {
		byKind := map[FaultKind][]*FaultRecord{}
		var kinds []FaultKind
		for _, f := range s.Faults {
			if _, ok := byKind[f.Kind]; !ok {
				kinds = append(kinds, f.Kind)
			}
			byKind[f.Kind] = append(byKind[f.Kind], f)
		}
		for _, k := range kinds {
			fs := byKind[k]
			if fs[0].Skipped != "" {
				fmt.Fprintf(w, "| %s | %s | %s | | | |\n", s.Setting.Name, k, fs[0].Skipped)
				continue
			}
			var rec []time.Duration
			ops, failed := 0, 0
			for _, f := range fs {
				rec = append(rec, f.Recovery)
				ops += f.Ops
				failed += f.Failed
			}
			slices.Sort(rec)
			fmt.Fprintf(w, "| %s | %s | %d | %v | %v | %d / %d |\n", s.Setting.Name, k, len(fs), rec[(len(rec)-1)/2].Round(10*time.Millisecond),
				rec[len(rec)-1].Round(10*time.Millisecond), failed, ops)
		}
	}
	for _, s := range r.Settings {
		for _, f := range s.Faults {
			if f.Detail == "" && len(f.FailedByError) == 0 {
				continue
			}
			fmt.Fprintf(w, "\n%s, %s at %v", s.Setting.Name, f.Kind, f.Start.Round(100*time.Millisecond))
			if f.Detail != "" {
				fmt.Fprintf(w, ": %s", f.Detail)
			}
			if len(f.FailedByError) > 0 {
				fmt.Fprintf(w, "; failed operations by error: %s", strings.Join(errorCounts(f.FailedByError), "; "))
			}
			fmt.Fprintln(w)
		}
	}
	for _, s := range r.Settings {
		for _, v := range s.Violations {
			fmt.Fprintf(w, "\n- **%s** [%s] %s", s.Setting.Name, v.Check, v.Detail)
			for _, op := range v.Ops {
				fmt.Fprintf(w, "\n  - %s", op)
			}
		}
	}
	fmt.Fprintln(w)
}
