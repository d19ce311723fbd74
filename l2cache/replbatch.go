package l2cache

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Batched replication of puts.
//
// A put fills the cache after a miss; its replication to the backups only
// keeps them warm for a takeover (a backup that lacks an entry misses, it
// is never stale). So an owner does not send each put's replication in a
// message of its own, answered before the put is: it queues it for each
// backup, and a backup's queue leaves in one one-way message a short
// while later (replBatchDelay), or at once when a change of any partition
// is replicated to that backup (a change's replication is synchronous, as
// before, and leaves after the puts queued before it).
//
// Order: a backup applies a partition's replications in the owner's
// sequence order, or marks its copy tainted. A put is queued, under the
// partition's lock, only when the partition's previous change has handed
// its messages over (dp.sent); otherwise it is sent as before, in its
// place in the send order. A change flushes its backups' queues before
// it sends its own replication. Both go on the same connection, whose
// frames the backup serves on one goroutine in order (one-way messages
// and inline requests alike). A batch that is lost (a broken connection)
// is a gap the backup sees at the partition's next replication: its copy
// is tainted, and a takeover starts empty — a cold start, never a stale
// entry.

const (
	rpcReplBatch = "l2.repls" // one-way: puts' replications to a backup

	// replBatchDelay is how long a queued put replication may wait for
	// others to share its message.
	replBatchDelay = 100 * time.Millisecond
	// replBatchMax bounds a batch (replications, bytes): past it the
	// batch leaves without waiting out the delay.
	replBatchMax      = 256
	replBatchMaxBytes = 256 << 10
)

// replBatch is the queue of put replications for one backup.
type replBatch struct {
	d  *dist
	to string

	mu     sync.Mutex
	ops    [][]byte // encoded replications, in the order queued
	bytes  int
	timer  *time.Timer // the pending flush; nil if none
	closed bool
}

// batch returns the queue for backup to.
func (d *dist) batch(to string) *replBatch {
	d.bmu.Lock()
	defer d.bmu.Unlock()
	b := d.batches[to]
	if b == nil {
		if d.batches == nil {
			d.batches = map[string]*replBatch{}
		}
		b = &replBatch{d: d, to: to}
		d.batches[to] = b
	}
	return b
}

// flushBatch sends backup to's queued replications now, if any: before a
// change's replication to it.
func (d *dist) flushBatch(to string) {
	d.bmu.Lock()
	b := d.batches[to]
	d.bmu.Unlock()
	if b != nil {
		b.flush()
	}
}

// closeBatches stops every pending flush (what is queued is dropped: the
// node is closing).
func (d *dist) closeBatches() {
	d.bmu.Lock()
	bs := make([]*replBatch, 0, len(d.batches))
	for _, b := range d.batches {
		bs = append(bs, b)
	}
	d.bmu.Unlock()
	for _, b := range bs {
		b.mu.Lock()
		b.closed, b.ops = true, nil
		if b.timer != nil {
			b.timer.Stop()
			b.timer = nil
		}
		b.mu.Unlock()
	}
}

// add queues an encoded replication. It does not send (it is called under
// a partition's lock): the flush runs on a timer, or with the next change.
func (b *replBatch) add(op []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.ops = append(b.ops, op)
	b.bytes += len(op)
	delay := replBatchDelay
	if len(b.ops) >= replBatchMax || b.bytes >= replBatchMaxBytes {
		delay = 0
	}
	switch {
	case b.timer == nil:
		b.timer = time.AfterFunc(delay, b.flush)
	case delay == 0:
		b.timer.Reset(0)
	}
}

// flush sends what is queued, in one message. The queue's lock is held
// while the message is handed to the connection, so batches leave in the
// order they were taken.
func (b *replBatch) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if len(b.ops) == 0 || b.closed {
		return
	}
	size := 5
	for _, op := range b.ops {
		size += len(op) + 5
	}
	body := appendArrayHeader(make([]byte, 0, size), len(b.ops))
	for _, op := range b.ops {
		body = appendBin(body, op)
	}
	b.ops, b.bytes = nil, 0
	st := &b.d.c.stats
	st.RemoteCalls.Add(1)
	st.RemoteByKind[remoteRepl].Add(1)
	st.RemoteBytes.Add(uint64(len(body)))
	if err := b.d.rpc.Notify(b.to, rpcReplBatch, body); err != nil {
		// The backup sees the gap at the partition's next replication.
		b.d.c.cfg.Logger.Debug("l2cache: a batch of put replications was not sent", "backup", b.to, "err", err)
	}
}

// handleReplBatch applies a batch of put replications on a backup, in
// order, on the connection's reader goroutine.
func (d *dist) handleReplBatch(from string, body []byte) {
	if err := d.applyReplBatch(body); err != nil {
		d.c.cfg.Logger.Debug("l2cache: a batch of replications was not applied", "from", from, "err", err)
	}
}

func (d *dist) applyReplBatch(body []byte) error {
	dec := decoder{b: body}
	n := dec.array(replBatchMax * 4)
	ops := make([][]byte, 0, n)
	for range n {
		ops = append(ops, dec.bin())
	}
	if err := dec.end(); err != nil {
		return fmt.Errorf("unreadable batch of replications: %w", err)
	}
	var errs int
	for _, op := range ops {
		if _, err := d.handleRepl(context.Background(), "", op); err != nil {
			errs++
		}
	}
	if errs > 0 {
		return fmt.Errorf("%d of %d replications refused", errs, len(ops))
	}
	return nil
}
