package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scheduler runs this node's share of the cluster's jobs. Create it with
// New, register runners, Start it, and Close it. Its methods are safe for
// concurrent use.
type Scheduler struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	stats Stats

	mu        sync.Mutex
	runners   map[string]Runner
	local     map[string]*entry // RunLocally jobs
	clustered map[string]*entry // this node's copies of the clustered jobs
	queue     entryQueue
	seq       uint64 // counts changes to clustered entries (see applyList)
	started   bool
	closed    bool
	// runnersDirty: the registration in the store must be rewritten.
	runnersDirty bool

	kick      chan struct{} // wakes the loop: the queue changed
	refreshCh chan struct{} // asks the refresher for a refresh now
	work      chan *entry
	ctx       context.Context // ends at Close; runs and store calls use it
	cancel    context.CancelFunc
	unsub     func()
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// entry is a job as this node holds it: a local job's state, or its copy
// of a clustered job's record at some version.
type entry struct {
	rec     record
	comp    compiled
	local   bool
	version uint64    // store version of rec (clustered)
	seq     uint64    // Scheduler.seq when last changed (clustered)
	due     time.Time // when queued: the time it is due
	retryAt time.Time // after a store error: not before
	// holdFor and holdUntil: the claim of the run due at holdFor waits
	// until holdUntil (ClaimStagger).
	holdFor, holdUntil time.Time
	idx                int  // position in the queue; -1 when not queued
	running            bool // a worker has it
}

// New checks cfg and returns a scheduler that does nothing until Start.
func New(cfg Config) (*Scheduler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Scheduler{
		cfg: cfg, log: cfg.Logger.With("component", "scheduler", "node", cfg.Name), clock: cfg.Clock,
		runners: map[string]Runner{NoopRunner: RunnerFunc(noop)}, local: map[string]*entry{}, clustered: map[string]*entry{},
		kick: make(chan struct{}, 1), refreshCh: make(chan struct{}, 1), work: make(chan *entry),
		ctx: ctx, cancel: cancel,
	}, nil
}

// NoopRunner is the key of a runner every scheduler has: it does nothing.
// Operators can schedule it to see that the cluster runs jobs (and where);
// the multi-process failover test does.
const NoopRunner = "scheduler.noop"

func noop(context.Context, Request) error { return nil }

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() *Stats { return &s.stats }

// Name is this node's name.
func (s *Scheduler) Name() string { return s.cfg.Name }

// Register makes runner run the jobs whose runner key is key, on this
// node. Registering a key again replaces its runner. Registrations are
// published in the store (so that operators can see which jobs wait for a
// runner) by the background refresher: Register does not block.
func (s *Scheduler) Register(key string, runner Runner) error {
	if key == "" || runner == nil {
		return fmt.Errorf("%w: a runner needs a key and a function", ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.runners[key] = runner
	s.runnersDirty = true
	for _, e := range s.allLocked() {
		if e.rec.Job.Runner == key {
			s.requeueLocked(e)
		}
	}
	s.signal(s.refreshCh)
	return nil
}

// Start subscribes to the bus and starts the loop, the workers and the
// refresher; clustered jobs are read from the store in the background.
// Calling it again does nothing.
func (s *Scheduler) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return nil
	}
	s.started = true
	s.runnersDirty = true
	if s.cfg.Bus != nil {
		s.unsub = s.cfg.Bus.Subscribe(Topic, busSubscriber{s})
	}
	s.wg.Add(2 + s.cfg.Workers)
	go s.loop()
	go s.refresher()
	for range s.cfg.Workers {
		go s.worker()
	}
	return nil
}

// Close stops the scheduler: runs in progress see their context end and
// Close waits for them (a runner that ignores its context delays Close).
// Their outcome is recorded if the store still answers. Safe to call
// twice.
func (s *Scheduler) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		unsub := s.unsub
		s.mu.Unlock()
		if unsub != nil {
			unsub()
		}
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// signal wakes a goroutine waiting on ch without blocking.
func (s *Scheduler) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *Scheduler) allLocked() []*entry {
	out := make([]*entry, 0, len(s.local)+len(s.clustered))
	for _, e := range s.local {
		out = append(out, e)
	}
	for _, e := range s.clustered {
		out = append(out, e)
	}
	return out
}

// checkJob validates a job and compiles its schedule.
func (s *Scheduler) checkJob(j Job) (compiled, error) {
	switch {
	case j.ID == "" || len(j.ID) > 200 || strings.ContainsAny(j.ID, "/\x00"):
		return compiled{}, fmt.Errorf("%w: job ID %q (want 1-200 bytes, no '/')", ErrInvalid, j.ID)
	case j.Runner == "":
		return compiled{}, fmt.Errorf("%w: job %q has no runner key", ErrInvalid, j.ID)
	case len(j.Params) > s.cfg.MaxParams:
		return compiled{}, fmt.Errorf("%w: job %q parameters are %d bytes, over the limit of %d", ErrInvalid, j.ID, len(j.Params), s.cfg.MaxParams)
	case j.Mode != RunOncePerCluster && j.Mode != RunLocally:
		return compiled{}, fmt.Errorf("%w: job %q run mode %q (want %q or %q)", ErrInvalid, j.ID, j.Mode, RunOncePerCluster, RunLocally)
	case j.Mode == RunOncePerCluster && s.cfg.Store == nil:
		return compiled{}, fmt.Errorf("%w: job %q", ErrNoStore, j.ID)
	}
	return j.Schedule.compile()
}

// sameJob reports whether two definitions are the same (times compared as
// instants: a stored copy has lost its location).
func sameJob(a, b Job) bool {
	sa, sb := a.Schedule, b.Schedule
	return a.ID == b.ID && a.Runner == b.Runner && string(a.Params) == string(b.Params) && a.Mode == b.Mode &&
		sa.Kind == sb.Kind && sa.Cron == sb.Cron && sa.TimeZone == sb.TimeZone && sa.Every == sb.Every &&
		sa.First.Equal(sb.First) && sa.At.Equal(sb.At)
}

// Schedule adds a job, or replaces the definition of the job with its ID.
// Scheduling the same definition again changes nothing (nodes may all
// schedule their built-in jobs at start); a changed definition keeps the
// job's history and pause state and recomputes its next fire time. A
// clustered job is written to the store and announced; it blocks until
// the store answers or ctx ends. Errors: ErrInvalid, ErrNoStore,
// ErrConflict, ErrClosed, and the store's.
func (s *Scheduler) Schedule(ctx context.Context, j Job) error {
	c, err := s.checkJob(j)
	if err != nil {
		return err
	}
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := s.checkIDFree(j); err != nil {
		return err
	}
	if j.Mode == RunLocally {
		s.scheduleLocal(j, c)
		return nil
	}
	return s.modify(ctx, j.ID, true, func(r *record, exists bool) (bool, error) {
		switch {
		case !exists:
			*r = newRecord(j, c, s.clock.Now())
		case sameJob(r.Job, j):
			return false, nil
		default:
			r.Job = j
			r.NextRun, _ = c.first(s.clock.Now())
		}
		return true, nil
	})
}

// checkIDFree refuses a job whose ID this node knows in the other run
// mode: operators address jobs by ID alone.
func (s *Scheduler) checkIDFree(j Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	other := s.clustered
	if j.Mode == RunOncePerCluster {
		other = s.local
	}
	if other[j.ID] != nil {
		return fmt.Errorf("%w: job %q already exists in the other run mode", ErrInvalid, j.ID)
	}
	return nil
}

func (s *Scheduler) scheduleLocal(j Job, c compiled) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.local[j.ID]
	switch {
	case e == nil:
		e = &entry{rec: newRecord(j, c, s.clock.Now()), comp: c, local: true, idx: -1}
		s.local[j.ID] = e
	case sameJob(e.rec.Job, j):
		return
	default:
		e.rec.Job, e.comp = j, c
		e.rec.NextRun, _ = c.first(s.clock.Now())
	}
	s.requeueLocked(e)
}

func (s *Scheduler) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Pause stops a job's scheduled runs (a pending run-now still runs).
// Errors: ErrNotFound, ErrConflict, ErrClosed and the store's.
func (s *Scheduler) Pause(ctx context.Context, id string) error {
	return s.change(ctx, id, func(r *record) { r.Paused = true })
}

// Resume restarts a paused job. Its next fire time is kept: if it passed
// during the pause, the job runs once at once (missed fire times are
// coalesced, see Config.MisfireThreshold).
func (s *Scheduler) Resume(ctx context.Context, id string) error {
	return s.change(ctx, id, func(r *record) { r.Paused = false })
}

// RunNow asks for one extra run of the job as soon as possible, on one
// node for a clustered job; its fire time is the time of the request. The
// regular schedule is unchanged, and a paused job runs too. ErrNoRunner
// (and nothing changes) if no live node has registered its runner.
func (s *Scheduler) RunNow(ctx context.Context, id string) error {
	st, err := s.Job(ctx, id)
	if err != nil {
		return err
	}
	if len(st.Runners) == 0 {
		return fmt.Errorf("%w: job %q needs runner %q", ErrNoRunner, id, st.Runner)
	}
	now := s.clock.Now()
	return s.change(ctx, id, func(r *record) { r.RunNowAt = now })
}

// change applies f to a local job, or to a clustered one by
// CompareAndSet.
func (s *Scheduler) change(ctx context.Context, id string, f func(*record)) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	s.mu.Lock()
	if e := s.local[id]; e != nil {
		f(&e.rec)
		s.requeueLocked(e)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if s.cfg.Store == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return s.modify(ctx, id, false, func(r *record, exists bool) (bool, error) {
		if !exists {
			return false, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		f(r)
		return true, nil
	})
}

// maxModifyAttempts bounds the read-modify-write retries of an operator's
// change before ErrConflict.
const maxModifyAttempts = 50

// modify reads a clustered job, lets f change it, and writes it back by
// CompareAndSet, retrying on a concurrent change; then it announces the
// new version. f reports whether there is anything to write.
func (s *Scheduler) modify(ctx context.Context, id string, create bool, f func(r *record, exists bool) (bool, error)) error {
	for range maxModifyAttempts {
		rec, version, err := s.fetch(ctx, id)
		exists := err == nil
		if err != nil && (!errors.Is(err, ErrNotFound) || !create) {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: %q", ErrNotFound, id)
			}
			return err
		}
		write, err := f(&rec, exists)
		if err != nil || !write {
			if exists {
				s.apply(id, rec, version)
			}
			return err
		}
		v, err := s.cas(ctx, id, version, &rec)
		switch {
		case err == nil:
			s.apply(id, rec, v)
			s.announce(id, v, &rec)
			return nil
		case isConflict(err):
			s.stats.ClaimConflicts.Add(1)
			continue
		}
		return err
	}
	return fmt.Errorf("%w: %q", ErrConflict, id)
}

// Delete removes a job. A run in progress finishes, unrecorded.
// ErrNotFound if there is no such job.
func (s *Scheduler) Delete(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	s.mu.Lock()
	if e := s.local[id]; e != nil {
		s.queue.remove(e)
		delete(s.local, id)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if s.cfg.Store == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	_, version, err := s.fetch(ctx, id)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	if err := s.cfg.Store.Delete(sctx, jobKey(id)); err != nil {
		return fmt.Errorf("scheduler: deleting %q: %w", id, err)
	}
	s.forget(id, version)
	s.announceDelete(id, version)
	return nil
}

// Job returns a job's status: a local job's, else a clustered job's as
// the store has it now (linearizable). ErrNotFound if there is none.
func (s *Scheduler) Job(ctx context.Context, id string) (Status, error) {
	runners := s.liveRunners()
	s.mu.Lock()
	if e := s.local[id]; e != nil {
		st := s.statusLocked(e.rec, 0, runners)
		s.mu.Unlock()
		return st, nil
	}
	s.mu.Unlock()
	if s.cfg.Store == nil {
		return Status{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	rec, version, err := s.fetch(ctx, id)
	if err != nil {
		return Status{}, err
	}
	return s.status(rec, version, runners), nil
}

// Jobs lists this node's local jobs and the cluster's jobs (read from the
// store, linearizably), sorted by ID, local first on a tie.
func (s *Scheduler) Jobs(ctx context.Context) ([]Status, error) {
	runners := s.liveRunners()
	var out []Status
	s.mu.Lock()
	for _, e := range s.local {
		out = append(out, s.statusLocked(e.rec, 0, runners))
	}
	s.mu.Unlock()
	if s.cfg.Store != nil {
		sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		kvs, err := s.cfg.Store.List(sctx, jobPrefix)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("scheduler: listing jobs: %w", err)
		}
		for _, kv := range kvs {
			rec, err := decodeRecord(kv.Value)
			if err != nil {
				s.log.Warn("skipping an unreadable job", "key", kv.Key, "err", err)
				continue
			}
			out = append(out, s.status(rec, kv.Version, runners))
		}
	}
	slices.SortStableFunc(out, func(a, b Status) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Snapshot lists the jobs as this node holds them — its local jobs and its
// copies of the clustered ones — without asking the store: it answers
// while the store has no leader, and may lag it. Sorted by ID.
func (s *Scheduler) Snapshot() []Status {
	runners := s.liveRunners()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.local)+len(s.clustered))
	for _, e := range s.local {
		out = append(out, s.statusLocked(e.rec, 0, runners))
	}
	for _, e := range s.clustered {
		out = append(out, s.statusLocked(e.rec, e.version, runners))
	}
	slices.SortStableFunc(out, func(a, b Status) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (s *Scheduler) status(r record, version uint64, runners map[string][]string) Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked(r, version, runners)
}

// statusLocked describes a record. runners maps runner keys to the live
// nodes that registered them (for local jobs only this node's count).
func (s *Scheduler) statusLocked(r record, version uint64, runners map[string][]string) Status {
	st := Status{
		Job: r.Job, Paused: r.Paused, NextRun: r.NextRun, RunNowAt: r.RunNowAt, Version: version,
		Misfires: r.Misfires, Created: r.Created, Runners: []string{},
	}
	if r.Job.Mode == RunLocally {
		if _, ok := s.runners[r.Job.Runner]; ok {
			st.Runners = []string{s.cfg.Name}
		}
	} else if n := runners[r.Job.Runner]; n != nil {
		st.Runners = n
	}
	st.History = lostRuns(r.History, s.cfg.aliveSet())
	switch _, due := r.dueAt(); {
	case r.Paused && r.RunNowAt.IsZero():
		st.State = StatePaused
	case !due:
		st.State = StateDone
	case len(st.Runners) == 0:
		st.State = StateWaiting
	default:
		st.State = StateScheduled
	}
	return st
}

// lostRuns copies a history, marking as lost each run still "running"
// whose node is not alive, or that its node started again after (one node
// never runs a job twice at once, so it restarted meanwhile).
func lostRuns(h []Run, alive map[string]bool) []Run {
	out := make([]Run, len(h))
	later := map[string]bool{}
	for i := len(h) - 1; i >= 0; i-- {
		r := h[i]
		if r.Outcome == OutcomeRunning && (!alive[r.Node] || later[r.Node]) {
			r.Outcome = OutcomeLost
		}
		later[r.Node] = true
		out[i] = r
	}
	return out
}

// newToken is a claim's identity, kept in the history entry it writes.
func newToken() uint64 { return rand.Uint64() | 1 }
