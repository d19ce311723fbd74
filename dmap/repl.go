package dmap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/cluster/rpc"
	"github.com/shoal-dev/shoal/l2cache"
)

// Replication: an owner numbers its changes to a partition (one record per
// key a write left in a new state) and sends them to every backup in
// order, in batches: one batch ("flight") in flight per partition, the next
// carrying whatever queued meanwhile, so that a hot partition costs one
// round trip per batch, not per write. A write is acknowledged only when
// its batch reached every backup. The first batch an owner sends a backup
// under a table is the whole partition (a baseline); a backup applies
// records after its baseline in order, and a gap taints its copy.
//
// The flights of all partitions bound for one backup leave together: each
// backup has a link, whose senders (at most linkSenders at a time) take
// every flight queued for it into one message (rpcRepls) per round trip,
// so that writes to many partitions — a pipeline's, or many clients' at
// once — cost one round trip to each backup, not one per partition. The
// order within a partition is kept by the one flight per partition: a
// partition's next flight is queued only after every backup answered the
// last.

// linkSenders bounds the messages in flight to one backup at a time;
// linkBytes is the size past which a sender leaves further flights for
// the next message.
const (
	linkSenders = 2
	linkBytes   = 1 << 20
)

// replQueue is an owner's records waiting for their flight.
type replQueue struct {
	recs    []record
	waiters []*replWaiter
	busy    bool // a flight is out
}

// replWaiter is a write waiting for its flight: ch receives the outcome.
type replWaiter struct{ ch chan error }

// flight is one batch of a partition on its way to the partition's backups.
type flight struct {
	pt      *part
	p       int
	epoch   uint64
	sends   []replSend
	waiters []*replWaiter
	mu      sync.Mutex
	left    int
	errs    []error
}

type replSend struct {
	to   string
	r    *replication
	body []byte // r encoded
}

// link is the queue of flights bound for one backup (under DMap.lmu).
type link struct {
	to      string
	queue   []linkItem
	senders int
}

type linkItem struct {
	f *flight
	i int // the flight's send
}

// enqueue numbers recs and queues them for the backups (pt locked). Unless
// a flight of the partition is out, they leave in a new flight, which the
// caller submits once it unlocked the partition (with those of the other
// partitions it ran: they leave together). The waiter is nil when the
// partition has no backups.
func (d *DMap) enqueue(pt *part, p int, t *l2cache.PartitionTable, recs []record) (*replWaiter, *flight) {
	for i := range recs {
		pt.seq++
		recs[i].Seq = pt.seq
	}
	if len(backupsOf(t, p)) == 0 {
		return nil, nil
	}
	w := &replWaiter{ch: make(chan error, 1)}
	pt.rq.recs = append(pt.rq.recs, recs...)
	pt.rq.waiters = append(pt.rq.waiters, w)
	var f *flight
	if !pt.rq.busy {
		pt.rq.busy = true
		f = d.startFlight(pt, p, t)
	}
	return w, f
}

// wait returns when w's flight reached every backup, or why it did not.
func (w *replWaiter) wait() error {
	if w == nil {
		return nil
	}
	return <-w.ch
}

// startFlight makes what is queued for partition p a flight to its
// backups of table t (pt locked, rq.busy set, t the partition's adjusted
// table), for the caller to submit once it unlocked pt. It returns nil,
// and completes the waiters, when there is nothing to send (no backup in
// this table) or this node no longer owns the partition.
func (d *DMap) startFlight(pt *part, p int, t *l2cache.PartitionTable) *flight {
	recs, ws := pt.rq.recs, pt.rq.waiters
	pt.rq.recs, pt.rq.waiters = nil, nil
	var err error
	if !pt.owner {
		err = fmt.Errorf("dmap: no longer the owner of partition %d", p)
	} else if sends := d.plan(pt, p, t.Epoch, backupsOf(t, p), recs); len(sends) > 0 {
		return &flight{pt: pt, p: p, epoch: t.Epoch, sends: sends, waiters: ws, left: len(sends), errs: make([]error, len(sends))}
	}
	pt.rq.busy = false
	for _, w := range ws {
		w.ch <- err
	}
	return nil
}

// plan builds each backup's batch (pt locked): a baseline for a backup not
// yet given one under this table, else the queued records. Each is
// encoded once.
func (d *DMap) plan(pt *part, p int, epoch uint64, backups []string, recs []record) []replSend {
	var full, inc *replSend
	out := make([]replSend, 0, len(backups))
	for _, b := range backups {
		if pt.syncedAt[b] == epoch {
			if inc == nil {
				r := &replication{Partition: p, Epoch: epoch, Seq: pt.seq, Records: recs}
				inc = &replSend{r: r, body: appendReplication(nil, r)}
			}
			out = append(out, replSend{b, inc.r, inc.body})
			continue
		}
		if full == nil {
			r := &replication{Partition: p, Epoch: epoch, Full: true, Seq: pt.seq, Records: make([]record, 0, len(pt.keys))}
			for k, e := range pt.keys {
				r.Records = append(r.Records, record{Key: k, E: e})
			}
			full = &replSend{r: r, body: appendReplication(nil, r)}
		}
		out = append(out, replSend{b, full.r, full.body})
	}
	return out
}

// submit queues the flights' sends on their backups' links (nil flights
// are skipped), and starts a sender for a link that has fewer than
// linkSenders. Once the map is closed, the flights fail. No partition's
// lock may be held: a failed flight completes at once.
func (d *DMap) submit(fs ...*flight) {
	if len(fs) == 0 || len(fs) == 1 && fs[0] == nil {
		return
	}
	d.lmu.Lock()
	if d.linksClosed {
		d.lmu.Unlock()
		for len(fs) > 0 {
			var next []*flight
			for _, f := range fs {
				if f == nil {
					continue
				}
				for i := range f.sends {
					if nf := d.landed(f, i, ErrClosed); nf != nil {
						next = append(next, nf)
					}
				}
			}
			fs = next
		}
		return
	}
	var start []*link
	for _, f := range fs {
		if f == nil {
			continue
		}
		for i := range f.sends {
			d.replications.Add(1)
			if f.sends[i].r.Full {
				d.fullSyncs.Add(1)
			}
			to := f.sends[i].to
			l := d.links[to]
			if l == nil {
				l = &link{to: to}
				d.links[to] = l
			}
			l.queue = append(l.queue, linkItem{f, i})
			if l.senders < linkSenders && !slices.Contains(start, l) {
				l.senders++
				d.wg.Add(1)
				start = append(start, l)
			}
		}
	}
	d.lmu.Unlock()
	for _, l := range start {
		go d.linkLoop(l)
	}
}

// linkLoop sends link l's queued flights, as many as fit in one message
// at a time, until none is left.
func (d *DMap) linkLoop(l *link) {
	defer d.wg.Done()
	var items []linkItem
	for {
		d.lmu.Lock()
		if len(l.queue) == 0 {
			l.senders--
			if l.senders == 0 && d.links[l.to] == l {
				delete(d.links, l.to)
			}
			d.lmu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(l.queue) && (n == 0 || size+len(l.queue[n].f.sends[l.queue[n].i].body) <= linkBytes) {
			size += len(l.queue[n].f.sends[l.queue[n].i].body)
			n++
		}
		items = append(items[:0], l.queue[:n]...)
		clear(l.queue[:n])
		l.queue = l.queue[n:]
		if len(l.queue) == 0 {
			l.queue = nil
		}
		d.lmu.Unlock()
		errs := d.sendRepls(l.to, items)
		// The partitions' next flights (writes that queued while these
		// were out) leave together, not each alone.
		var next []*flight
		for j, it := range items {
			if nf := d.landed(it.f, it.i, errs[j]); nf != nil {
				next = append(next, nf)
			}
		}
		clear(items)
		d.submit(next...)
	}
}

// sendRepls sends items, all bound for backup to, in one message, within
// SyncTimeout, and returns each one's outcome. A backup that does not
// know the message (an older shoal) is sent each one alone.
func (d *DMap) sendRepls(to string, items []linkItem) []error {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.SyncTimeout)
	defer cancel()
	errs := make([]error, len(items))
	d.replMessages.Add(1)
	if len(items) == 1 && !d.noRepls(to) {
		// One flight: the message of one replication, understood by
		// every version.
		if _, err := d.rpc.Call(ctx, to, rpcRepl, items[0].f.sends[items[0].i].body); err != nil {
			errs[0] = fmt.Errorf("backup %s: %w", to, err)
		}
		return errs
	}
	if !d.noRepls(to) {
		bodies := make([][]byte, len(items))
		for j, it := range items {
			bodies[j] = it.f.sends[it.i].body
		}
		rep, err := d.rpc.Call(ctx, to, rpcRepls, appendRepls(nil, bodies))
		var re *rpc.RemoteError
		switch {
		case err == nil:
			msgs, derr := decodeReplsReply(rep, len(items))
			for j := range errs {
				switch {
				case derr != nil:
					errs[j] = fmt.Errorf("backup %s: %w", to, derr)
				case msgs[j] != "":
					errs[j] = fmt.Errorf("backup %s: %s", to, msgs[j])
				}
			}
			return errs
		case errors.As(err, &re) && strings.Contains(re.Msg, "no handler for"):
			d.oldPeers.Store(to, true)
		default:
			for j := range errs {
				errs[j] = fmt.Errorf("backup %s: %w", to, err)
			}
			return errs
		}
	}
	var wg sync.WaitGroup
	d.replMessages.Add(uint64(len(items) - 1))
	for j, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.rpc.Call(ctx, to, rpcRepl, it.f.sends[it.i].body); err != nil {
				errs[j] = fmt.Errorf("backup %s: %w", to, err)
			}
		}()
	}
	wg.Wait()
	return errs
}

// noRepls reports whether backup to answered that it does not know
// rpcRepls (a node of an older shoal).
func (d *DMap) noRepls(to string) bool {
	_, old := d.oldPeers.Load(to)
	return old
}

// landed records the outcome of flight f's send i; the last one completes
// the flight: its waiters are told, and the partition's next flight, if
// writes queued meanwhile, is returned for the caller to submit.
func (d *DMap) landed(f *flight, i int, err error) *flight {
	f.mu.Lock()
	f.errs[i] = err
	f.left--
	last := f.left == 0
	f.mu.Unlock()
	if !last {
		return nil
	}
	err = errors.Join(f.errs...)
	pt := f.pt
	pt.mu.Lock()
	for i, s := range f.sends {
		if f.errs[i] != nil && s.r.Full {
			d.sweepAll.Store(true) // the sweep tries the baseline again
			d.wakeSweep()
		}
		if f.errs[i] == nil && s.r.Full && pt.epoch == f.epoch {
			if pt.syncedAt == nil {
				pt.syncedAt = map[string]uint64{}
			}
			pt.syncedAt[s.to] = f.epoch
		}
	}
	var next *flight
	if len(pt.rq.waiters) > 0 {
		next = d.startFlight(pt, f.p, d.adjust(pt, f.p))
	} else {
		pt.rq.busy = false
	}
	pt.mu.Unlock()
	for _, w := range f.waiters {
		w.ch <- err
	}
	return next
}

// handleRepls applies a message of batches (of different partitions) at a
// backup, each as handleRepl does, and answers each one's outcome.
func (d *DMap) handleRepls(ctx context.Context, from string, body []byte) ([]byte, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	bodies, err := decodeRepls(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable replications: %w", err)
	}
	rs := make([]replication, len(bodies))
	errs := make([]error, len(bodies))
	var epoch uint64
	for i, b := range bodies {
		if rs[i], errs[i] = decodeReplication(b); errs[i] == nil {
			epoch = max(epoch, rs[i].Epoch)
		}
	}
	if rpc.Inline(ctx) && d.cfg.Keeper.Table().Epoch < epoch {
		return nil, rpc.ErrWouldBlock // awaitEpoch waits: not on the reader
	}
	msgs := make([]string, len(bodies))
	for i := range rs {
		err := errs[i]
		if err != nil {
			err = fmt.Errorf("unreadable replication: %w", err)
		} else {
			err = d.applyRepl(ctx, from, &rs[i])
		}
		if err != nil {
			msgs[i] = err.Error()
		}
	}
	return appendReplsReply(nil, msgs), nil
}

// handleRepl applies an owner's batch at a backup. It is served on the
// connection's reader (rpc.HandleInline) unless this node has yet to adopt
// the owner's table: awaitEpoch waits for it on a goroutine of its own.
func (d *DMap) handleRepl(ctx context.Context, from string, body []byte) ([]byte, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	r, err := decodeReplication(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable replication: %w", err)
	}
	if rpc.Inline(ctx) && d.cfg.Keeper.Table().Epoch < r.Epoch {
		return nil, rpc.ErrWouldBlock
	}
	return nil, d.applyRepl(ctx, from, &r)
}

// applyRepl applies replication r from owner from (after waiting briefly
// for its table, if this node lags).
func (d *DMap) applyRepl(ctx context.Context, from string, r *replication) error {
	if r.Partition >= d.cfg.Partitions {
		return fmt.Errorf("%w: replication of partition %d", ErrCodec, r.Partition)
	}
	d.awaitEpoch(ctx, r.Epoch)
	pt, t := d.lockPart(r.Partition)
	defer pt.mu.Unlock()
	if !pt.backup || !d.sameRun(r.Partition, from, r.Epoch, t.Epoch) {
		return fmt.Errorf("dmap: %s is not %s's backup of partition %d from epoch %d to its table's %d", d.self, from, r.Partition, r.Epoch, t.Epoch)
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
	return nil
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
