package scheduler

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
)

// This file runs jobs: the queue ordered by due time, the loop that hands
// due jobs to the workers, and a worker's claim, run and record.

// entryQueue is a min-heap of entries by due time.
type entryQueue []*entry

func (q entryQueue) Len() int           { return len(q) }
func (q entryQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q entryQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].idx, q[j].idx = i, j
}
func (q *entryQueue) Push(x any) {
	e := x.(*entry)
	e.idx = len(*q)
	*q = append(*q, e)
}
func (q *entryQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.idx = -1
	return e
}

func (q *entryQueue) remove(e *entry) {
	if e.idx >= 0 {
		heap.Remove(q, e.idx)
	}
}

// requeueLocked puts e in the queue at its due time, or takes it out: a
// job that is running here, has nothing due, or whose runner this node
// lacks is not queued (it is requeued when that changes).
func (s *Scheduler) requeueLocked(e *entry) {
	due, ok := e.rec.dueAt()
	if _, has := s.runners[e.rec.Job.Runner]; !has || e.running || !ok {
		s.queue.remove(e)
		return
	}
	if e.holdFor.Equal(due) && e.holdUntil.After(due) {
		due = e.holdUntil
	}
	if e.retryAt.After(due) {
		due = e.retryAt
	}
	e.due = due
	if e.idx >= 0 {
		heap.Fix(&s.queue, e.idx)
	} else {
		heap.Push(&s.queue, e)
	}
	s.signal(s.kick)
}

// loop hands each due entry to a free worker, marking it running, and
// otherwise sleeps until the earliest due time or a change.
func (s *Scheduler) loop() {
	defer s.wg.Done()
	for {
		e, at := s.nextDue()
		if e != nil {
			select {
			case s.work <- e:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		var timer Timer
		var fired <-chan time.Time
		if !at.IsZero() {
			timer = s.clock.NewTimerAt(at)
			fired = timer.C()
		}
		select {
		case <-s.ctx.Done():
		case <-s.kick:
		case <-fired:
		}
		if timer != nil {
			timer.Stop()
		}
		if s.ctx.Err() != nil {
			return
		}
	}
}

// nextDue pops the earliest entry if it is due, marking it running, or
// returns when it will be (zero: nothing queued).
func (s *Scheduler) nextDue() (*entry, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil, time.Time{}
	}
	e := s.queue[0]
	if e.due.After(s.clock.Now()) {
		return nil, e.due
	}
	heap.Pop(&s.queue)
	e.running = true
	return e, time.Time{}
}

func (s *Scheduler) worker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case e := <-s.work:
			if e.local {
				s.fireLocal(e)
			} else {
				s.fireClustered(e)
			}
		}
	}
}

// release ends a worker's hold on e and requeues it; retry delays it
// after a store error.
func (s *Scheduler) release(e *entry, retry bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.running = false
	e.retryAt = time.Time{}
	if retry {
		e.retryAt = s.clock.Now().Add(s.cfg.RetryInterval)
	}
	if (e.local && s.local[e.rec.Job.ID] == e) || (!e.local && s.clustered[e.rec.Job.ID] == e) {
		s.requeueLocked(e)
	}
}

func (s *Scheduler) limits() claimLimits {
	return claimLimits{misfire: s.cfg.MisfireThreshold, history: s.cfg.HistoryLimit}
}

// fireLocal claims a local job's run in memory, runs it and records it.
func (s *Scheduler) fireLocal(e *entry) {
	token := newToken()
	s.mu.Lock()
	claimed, fire, ok := claimRun(e.rec, e.comp, s.clock.Now(), s.cfg.Name, token, s.limits())
	if ok {
		s.countMisfire(e.rec, claimed)
		e.rec = claimed
	}
	runner, job := s.runners[e.rec.Job.Runner], e.rec.Job
	s.mu.Unlock()
	if ok && runner != nil {
		err := s.execute(runner, job, fire)
		s.mu.Lock()
		e.rec, _ = finishRun(e.rec, token, s.clock.Now(), err)
		s.mu.Unlock()
	}
	s.release(e, false)
}

func (s *Scheduler) countMisfire(before, after record) {
	if after.Misfires > before.Misfires {
		s.stats.Misfires.Add(1)
	}
}

// maxClaimAttempts bounds one node's claim retries for one due run: every
// conflict means another node changed the job, usually by claiming it.
const maxClaimAttempts = 20

// fireClustered claims a due clustered run with CompareAndSet on the
// version of this node's copy. The winner runs it; a loser re-reads the
// job and tries again only if a run is still due (its copy was stale, or
// the conflicting write was not a claim, say a history update). No lock is
// held while the job runs: the claim itself moved the job to its next
// fire time.
func (s *Scheduler) fireClustered(e *entry) {
	if s.stagger(e) {
		return
	}
	s.mu.Lock()
	id, rec, version, comp := e.rec.Job.ID, e.rec, e.version, e.comp
	s.mu.Unlock()
	token := newToken()
	for range maxClaimAttempts {
		claimed, fire, ok := claimRun(rec, comp, s.clock.Now(), s.cfg.Name, token, s.limits())
		if !ok {
			s.release(e, false)
			return
		}
		v, err := s.cas(s.ctx, id, version, &claimed)
		if errors.Is(err, cp.ErrIndeterminate) {
			// The claim may have been applied: the history says.
			if cur, cv, ferr := s.fetch(s.ctx, id); ferr == nil && cur.claimedBy(token) {
				claimed, v, err = cur, cv, nil
			}
		}
		switch {
		case err == nil:
			s.stats.Claims.Add(1)
			s.countMisfire(rec, claimed)
			s.apply(id, claimed, v)
			s.announce(id, v, &claimed)
			s.runClaimed(e, claimed, v, fire, token)
			return
		case isConflict(err):
			s.stats.ClaimConflicts.Add(1)
			cur, cv, ferr := s.fetch(s.ctx, id)
			if errors.Is(ferr, ErrNotFound) {
				s.forget(id, version)
				s.release(e, false)
				return
			}
			if ferr != nil {
				err = ferr
				break
			}
			s.apply(id, cur, cv)
			rec, version, comp = cur, cv, mustCompile(cur, comp)
			continue
		}
		if s.ctx.Err() == nil {
			s.stats.ClaimErrors.Add(1)
			s.log.Info("claiming a run failed; retrying", "job", id, "err", err)
		}
		s.release(e, true)
		return
	}
	s.release(e, true)
}

// stagger holds back this node's claim of e's due run if it is not the
// first-ranked node for it (see Config.ClaimStagger), requeueing e at its
// turn; it reports whether it did.
func (s *Scheduler) stagger(e *entry) bool {
	if s.cfg.ClaimStagger <= 0 {
		return false
	}
	s.mu.Lock()
	due, ok := e.rec.dueAt()
	held := ok && e.holdFor.Equal(due)
	id, runner := e.rec.Job.ID, e.rec.Job.Runner
	s.mu.Unlock()
	if !ok || held {
		return false // its turn has come
	}
	k := claimRank(id, due, s.cfg.Name, s.liveRunners()[runner])
	if k == 0 {
		return false
	}
	s.mu.Lock()
	e.holdFor, e.holdUntil = due, due.Add(time.Duration(k)*s.cfg.ClaimStagger)
	s.mu.Unlock()
	s.release(e, false)
	return true
}

// claimRank is node's place among nodes for the run of job id due at due:
// rendezvous hashing, so each fire time has its own order and runs spread
// over the nodes. 0 if node is not among them.
func claimRank(id string, due time.Time, node string, nodes []string) int {
	score := func(n string) uint64 {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%s", id, due.UnixNano(), n))
		return binary.BigEndian.Uint64(sum[:8])
	}
	mine, rank := score(node), 0
	for _, n := range nodes {
		if n != node && score(n) > mine {
			rank++
		}
	}
	return rank
}

func mustCompile(r record, old compiled) compiled {
	if c, err := r.Job.Schedule.compile(); err == nil {
		return c
	}
	return old
}

// runClaimed runs a claimed run and records its outcome in the job's
// history, re-reading on conflicts.
func (s *Scheduler) runClaimed(e *entry, rec record, version uint64, fire time.Time, token uint64) {
	s.mu.Lock()
	runner := s.runners[rec.Job.Runner]
	s.mu.Unlock()
	runErr := s.execute(runner, rec.Job, fire)
	end := s.clock.Now()
	// The outcome is worth recording even while closing.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	defer cancel()
	for range maxModifyAttempts {
		done, ok := finishRun(rec, token, end, runErr)
		if !ok {
			break
		}
		v, err := s.cas(ctx, rec.Job.ID, version, &done)
		if err == nil {
			s.apply(rec.Job.ID, done, v)
			s.announce(rec.Job.ID, v, &done)
			break
		}
		if !isConflict(err) {
			s.log.Info("recording a run's outcome failed", "job", rec.Job.ID, "err", err)
			break
		}
		if rec, version, err = s.fetch(ctx, rec.Job.ID); err != nil {
			break
		}
	}
	s.release(e, false)
}

// execute runs a job, turning a panic into an error.
func (s *Scheduler) execute(r Runner, j Job, fire time.Time) (err error) {
	s.stats.Runs.Add(1)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
		if err != nil {
			s.stats.Failures.Add(1)
			s.log.Warn("job failed", "job", j.ID, "fire_time", fire, "err", truncate(err.Error(), maxErrorText))
		}
	}()
	if r == nil {
		return fmt.Errorf("%w: %q on %s", ErrNoRunner, j.Runner, s.cfg.Name)
	}
	return r.Run(s.ctx, Request{JobID: j.ID, Params: j.Params, FireTime: fire, Node: s.cfg.Name})
}
