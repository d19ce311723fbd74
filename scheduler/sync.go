package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
)

// This file keeps the node's copies of the clustered jobs in step with the
// store: reads and writes, bus announcements, and the periodic refresh.

// fetch reads a clustered job from the store, linearizably.
func (s *Scheduler) fetch(ctx context.Context, id string) (record, uint64, error) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	kv, err := s.cfg.Store.Get(sctx, jobKey(id))
	if errors.Is(err, cp.ErrNotFound) {
		return record{}, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return record{}, 0, fmt.Errorf("scheduler: reading job %q: %w", id, err)
	}
	rec, err := decodeRecord(kv.Value)
	return rec, kv.Version, err
}

// cas writes a clustered job if it is still at version (0: absent).
func (s *Scheduler) cas(ctx context.Context, id string, version uint64, r *record) (uint64, error) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	v, err := s.cfg.Store.CompareAndSet(sctx, jobKey(id), version, encodeRecord(r))
	if err != nil {
		return 0, fmt.Errorf("scheduler: writing job %q: %w", id, err)
	}
	return v, nil
}

// isConflict: the write lost to a concurrent one (or the job was deleted
// meanwhile); re-read and decide again.
func isConflict(err error) bool { return errors.Is(err, cp.ErrVersionMismatch) }

// apply takes a clustered record at version into this node's copies if it
// is newer than the copy, and requeues it.
func (s *Scheduler) apply(id string, r record, version uint64) {
	c, err := r.Job.Schedule.compile()
	if err != nil {
		s.log.Warn("ignoring a job with a bad schedule", "job", id, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.clustered[id]
	if e == nil {
		e = &entry{idx: -1}
		s.clustered[id] = e
	} else if version <= e.version {
		return
	}
	s.seq++
	e.rec, e.comp, e.version, e.seq = r, c, version, s.seq
	s.requeueLocked(e)
}

// forget drops this node's copy of a deleted clustered job, unless the
// copy is newer than the deleted version (the job was created again).
func (s *Scheduler) forget(id string, version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.clustered[id]; e != nil && e.version <= version {
		s.queue.remove(e)
		delete(s.clustered, id)
		s.seq++
	}
}

// announcement is the bus message of a change to a clustered job.
type announcement struct {
	ID      string `msgpack:"i"`
	Version uint64 `msgpack:"v"`
	Deleted bool   `msgpack:"d,omitempty"`
	Record  []byte `msgpack:"r,omitempty"`
}

func (s *Scheduler) announce(id string, version uint64, r *record) {
	s.publish(announcement{ID: id, Version: version, Record: encodeRecord(r)})
}

func (s *Scheduler) announceDelete(id string, version uint64) {
	s.publish(announcement{ID: id, Version: version, Deleted: true})
}

// publish is best effort: a lost announcement costs a stale copy, which a
// failed claim or the refresh corrects.
func (s *Scheduler) publish(a announcement) {
	if s.cfg.Bus == nil {
		return
	}
	b, err := msgpack.Marshal(&a)
	if err == nil {
		err = s.cfg.Bus.Publish(Topic, b)
	}
	if err != nil {
		s.log.Debug("announcing a job change failed", "job", a.ID, "err", err)
		return
	}
	s.stats.Announced.Add(1)
}

// busSubscriber takes announcements from other nodes. It runs on the
// bus's delivery goroutine and only updates memory.
type busSubscriber struct{ s *Scheduler }

func (b busSubscriber) Deliver(m cluster.Message) {
	var a announcement
	if err := msgpack.Unmarshal(m.Payload, &a); err != nil || a.ID == "" {
		b.s.log.Warn("ignoring an unreadable announcement", "from", m.From, "err", err)
		return
	}
	b.s.stats.AnnouncementsReceived.Add(1)
	if a.Deleted {
		b.s.forget(a.ID, a.Version)
		return
	}
	r, err := decodeRecord(a.Record)
	if err != nil {
		b.s.log.Warn("ignoring an unreadable announcement", "from", m.From, "err", err)
		return
	}
	b.s.apply(a.ID, r, a.Version)
}

func (b busSubscriber) Missed(m cluster.Missed) {
	b.s.stats.MissedReports.Add(1)
	b.s.signal(b.s.refreshCh)
}

// refresher re-reads every clustered job every RefreshInterval, and at
// once when asked (start, a missed-message report, a new runner); it also
// keeps this node's runner registration current.
func (s *Scheduler) refresher() {
	defer s.wg.Done()
	for {
		wait := s.cfg.RefreshInterval
		if err := s.refreshOnce(); err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.stats.RefreshErrors.Add(1)
			s.log.Info("refreshing jobs failed; retrying", "err", err)
			wait = s.cfg.RetryInterval
		}
		t := s.clock.NewTimerAt(s.clock.Now().Add(wait))
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-s.refreshCh:
		case <-t.C():
		}
		t.Stop()
	}
}

func (s *Scheduler) refreshOnce() error {
	if s.cfg.Store == nil {
		return nil
	}
	if err := s.writeRunners(); err != nil {
		return err
	}
	s.mu.Lock()
	start := s.seq
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StoreTimeout)
	defer cancel()
	kvs, err := s.cfg.Store.List(ctx, jobPrefix)
	if err != nil {
		return fmt.Errorf("scheduler: listing jobs: %w", err)
	}
	s.applyList(kvs, start)
	s.stats.Refreshes.Add(1)
	return nil
}

// applyList makes this node's copies those listed, except copies changed
// (by an announcement or a claim) since the listing started at seq start,
// which may be newer than the list.
func (s *Scheduler) applyList(kvs []cp.KV, start uint64) {
	listed := map[string]bool{}
	for _, kv := range kvs {
		id := strings.TrimPrefix(kv.Key, jobPrefix)
		r, err := decodeRecord(kv.Value)
		if err != nil {
			s.log.Warn("skipping an unreadable job", "key", kv.Key, "err", err)
			continue
		}
		listed[id] = true
		s.apply(id, r, kv.Version)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.clustered {
		if !listed[id] && e.seq <= start {
			s.queue.remove(e)
			delete(s.clustered, id)
		}
	}
}

// writeRunners publishes this node's runner keys under runnerKey(Name)
// when they changed.
func (s *Scheduler) writeRunners() error {
	s.mu.Lock()
	dirty := s.runnersDirty
	keys := sortedKeys(s.runners)
	s.runnersDirty = false
	s.mu.Unlock()
	if !dirty {
		return nil
	}
	b, _ := msgpack.Marshal(keys)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StoreTimeout)
	defer cancel()
	if _, err := s.cfg.Store.Put(ctx, runnerKey(s.cfg.Name), b); err != nil {
		s.mu.Lock()
		s.runnersDirty = true
		s.mu.Unlock()
		return fmt.Errorf("scheduler: registering runners: %w", err)
	}
	return nil
}

// liveRunners maps each runner key to the live nodes that registered it,
// from this node's replica of the registrations (and its own runners,
// which may not be written yet).
func (s *Scheduler) liveRunners() map[string][]string {
	alive := s.cfg.aliveSet()
	out := map[string][]string{}
	s.mu.Lock()
	for k := range s.runners {
		out[k] = append(out[k], s.cfg.Name)
	}
	s.mu.Unlock()
	if s.cfg.Store == nil {
		return out
	}
	for _, kv := range s.cfg.Store.StaleList(runnerPrefix) {
		node := strings.TrimPrefix(kv.Key, runnerPrefix)
		var keys []string
		if node == s.cfg.Name || !alive[node] || msgpack.Unmarshal(kv.Value, &keys) != nil {
			continue
		}
		for _, k := range keys {
			out[k] = append(out[k], node)
		}
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}
