package dmap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/l2cache"
)

// Replication: an owner numbers its changes to a partition (one record per
// key a write left in a new state) and sends them to every backup in
// order, in batches: one batch in flight per partition, the next carrying
// whatever queued meanwhile, so that a hot partition costs one round trip
// per batch, not per write. A write is acknowledged only when its batch
// reached every backup. The first batch an owner sends a backup under a
// table is the whole partition (a baseline); a backup applies records
// after its baseline in order, and a gap taints its copy.

// replQueue is an owner's records waiting for their batch.
type replQueue struct {
	recs    []record
	waiters []*replWaiter
	busy    bool // a batch is in flight, or a leader is about to send one
}

// replWaiter is a write waiting for its batch. The goroutine that waits is
// handed the sending of a batch when its turn comes (ch receives true), so
// no goroutine is started per partition.
type replWaiter struct {
	ch  chan bool
	err error
	pt  *part
	p   int
}

// enqueue numbers recs and queues them for the backups (pt locked). It
// returns nil when the partition has no backups.
func (d *DMap) enqueue(pt *part, p int, t *l2cache.PartitionTable, recs []record) *replWaiter {
	for i := range recs {
		pt.seq++
		recs[i].Seq = pt.seq
	}
	if len(backupsOf(t, p)) == 0 {
		return nil
	}
	w := &replWaiter{ch: make(chan bool, 1), pt: pt, p: p}
	pt.rq.recs = append(pt.rq.recs, recs...)
	pt.rq.waiters = append(pt.rq.waiters, w)
	if !pt.rq.busy {
		pt.rq.busy = true
		w.ch <- true
	}
	return w
}

// wait returns when w's batch reached every backup, or why it did not.
func (w *replWaiter) wait(d *DMap) error {
	if w == nil {
		return nil
	}
	if <-w.ch {
		d.sendBatch(w.pt, w.p)
	}
	return w.err
}

// sendBatch sends what is queued for partition p to its backups, completes
// the waiters, and hands the next batch to its first waiter.
func (d *DMap) sendBatch(pt *part, p int) {
	pt.mu.Lock()
	t := d.adjust(pt, p)
	recs, ws := pt.rq.recs, pt.rq.waiters
	pt.rq.recs, pt.rq.waiters = nil, nil
	var err error
	var sends []replSend
	if !pt.owner {
		err = fmt.Errorf("dmap: no longer the owner of partition %d", p)
	} else {
		sends = d.plan(pt, p, t.Epoch, backupsOf(t, p), recs)
	}
	pt.mu.Unlock()
	if err == nil {
		err = d.send(pt, p, t.Epoch, sends)
	}
	for _, w := range ws {
		w.err = err
	}
	pt.mu.Lock()
	var next *replWaiter
	if len(pt.rq.waiters) > 0 {
		next = pt.rq.waiters[0]
	} else {
		pt.rq.busy = false
	}
	pt.mu.Unlock()
	for _, w := range ws {
		select {
		case w.ch <- false:
		default: // the leader itself: not waiting on its channel
		}
	}
	if next != nil {
		next.ch <- true
	}
}

type replSend struct {
	to string
	r  *replication
}

// plan builds each backup's batch (pt locked): a baseline for a backup not
// yet given one under this table, else the queued records.
func (d *DMap) plan(pt *part, p int, epoch uint64, backups []string, recs []record) []replSend {
	var full *replication
	out := make([]replSend, 0, len(backups))
	inc := &replication{Partition: p, Epoch: epoch, Seq: pt.seq, Records: recs}
	for _, b := range backups {
		if pt.syncedAt[b] == epoch {
			out = append(out, replSend{b, inc})
			continue
		}
		if full == nil {
			full = &replication{Partition: p, Epoch: epoch, Full: true, Seq: pt.seq, Records: make([]record, 0, len(pt.keys))}
			for k, e := range pt.keys {
				full.Records = append(full.Records, record{Key: k, E: e})
			}
		}
		out = append(out, replSend{b, full})
	}
	return out
}

// send delivers the batches at once and waits for all, within SyncTimeout.
func (d *DMap) send(pt *part, p int, epoch uint64, sends []replSend) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.SyncTimeout)
	defer cancel()
	errs := make([]error, len(sends))
	var wg sync.WaitGroup
	for i, s := range sends {
		d.replications.Add(1)
		if s.r.Full {
			d.fullSyncs.Add(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.rpc.Call(ctx, s.to, rpcRepl, appendReplication(nil, s.r)); err != nil {
				errs[i] = fmt.Errorf("backup %s: %w", s.to, err)
			}
		}()
	}
	wg.Wait()
	pt.mu.Lock()
	for i, s := range sends {
		if errs[i] == nil && s.r.Full && pt.epoch == epoch {
			if pt.syncedAt == nil {
				pt.syncedAt = map[string]uint64{}
			}
			pt.syncedAt[s.to] = epoch
		}
	}
	pt.mu.Unlock()
	return errors.Join(errs...)
}

// handleRepl applies an owner's batch at a backup.
func (d *DMap) handleRepl(ctx context.Context, from string, body []byte) ([]byte, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	r, err := decodeReplication(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable replication: %w", err)
	}
	if r.Partition >= d.cfg.Partitions {
		return nil, fmt.Errorf("%w: replication of partition %d", ErrCodec, r.Partition)
	}
	d.awaitEpoch(ctx, r.Epoch)
	pt, t := d.lockPart(r.Partition)
	defer pt.mu.Unlock()
	if !pt.backup || !d.sameRun(r.Partition, from, r.Epoch, t.Epoch) {
		return nil, fmt.Errorf("dmap: %s is not %s's backup of partition %d from epoch %d to its table's %d", d.self, from, r.Partition, r.Epoch, t.Epoch)
	}
	k := ks{pt, d}
	if r.Full {
		pt.dropAll(d)
		pt.synced, pt.tainted, pt.seq = true, false, r.Seq
	}
	for i := range r.Records {
		rec := &r.Records[i]
		if !r.Full {
			if rec.Seq <= pt.seq {
				continue
			}
			if rec.Seq != pt.seq+1 {
				pt.tainted = true
			}
			pt.seq = rec.Seq
		}
		switch {
		case rec.Flush:
			pt.dropAll(d)
		case rec.E == nil:
			k.del(rec.Key)
		default:
			k.put(rec.Key, rec.E)
		}
	}
	if d.bytes.Load() > d.cfg.MaxBytes {
		go d.evictOver()
	}
	return nil, nil
}

// awaitEpoch waits briefly for this node to adopt the table an owner
// already has.
func (d *DMap) awaitEpoch(ctx context.Context, e uint64) {
	deadline := time.Now().Add(d.cfg.SyncTimeout / 2)
	for d.cfg.Keeper.Table().Epoch < e && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// sameRun reports whether, from epoch from to epoch to (this node's),
// owner owned partition p and this node was its backup throughout: an
// owner that has not yet adopted a table that changed nothing for p may
// still replicate to it.
func (d *DMap) sameRun(p int, owner string, from, to uint64) bool {
	if from == to {
		return true
	}
	t := d.cfg.Keeper.Table()
	if from > to || t.Epoch != to || t.Owner(p) != owner {
		return false
	}
	start, _ := d.cfg.Keeper.RunStart(p, d.self, to)
	return start <= from && d.cfg.Keeper.OwnerSince(p, to) <= from
}
