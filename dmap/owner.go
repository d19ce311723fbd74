package dmap

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/l2cache"
)

// part is this node's copy of one partition, as owner or backup.
type part struct {
	mu     sync.Mutex
	epoch  uint64 // the table epoch the role was set for
	owner  bool
	backup bool
	keys   map[string]*entry
	bytes  int64
	// expiring counts the keys with a deadline (changed under mu, read
	// without it by the sweep loop, which sweeps such a partition at
	// every tick).
	expiring atomic.Int64
	seq      uint64 // owner: last record numbered; backup: last applied
	synced   bool   // backup: holds a baseline from its owner for its run
	tainted  bool   // backup: missed a record since its baseline
	// servingFrom: a new owner answers only a lease after it adopted the
	// table that gave it the partition.
	servingFrom time.Time
	// handoff: a former owner keeps its copy until handoffUntil for the
	// next owner to fetch; fetchFrom: a new owner without a trusted copy
	// fetches the former owner's before it answers.
	handoff      bool
	handoffUntil time.Time
	fetchFrom    string
	fetchEpoch   uint64
	fetchUntil   time.Time
	fetching     bool

	// Owner only, forgotten when the partition changes hands.
	track    map[string][]string // key → members whose clients read it
	bcast    map[string]bool     // members told of every change
	invSeq   uint64
	syncedAt map[string]uint64 // backup → epoch it was last given a baseline
	rq       replQueue
}

// The keyspace of a part (its lock held).
func (pt *part) get(key string) *entry { return pt.keys[key] }

func (pt *part) setCost(d *DMap, delta int64) {
	pt.bytes += delta
	d.bytes.Add(delta)
}

// ks binds a part to its map for the keyspace interface.
type ks struct {
	pt *part
	d  *DMap
}

func (k ks) get(key string) *entry { return k.pt.keys[key] }

func (k ks) put(key string, e *entry) {
	k.del(key)
	k.pt.keys[key] = e
	k.pt.setCost(k.d, e.cost(key))
	if e.expire != 0 && k.pt.expiring.Add(1) == 1 {
		k.d.wakeSweep() // expired on time: the sweep loop may be asleep
	}
}

func (k ks) del(key string) bool {
	e := k.pt.keys[key]
	if e == nil {
		return false
	}
	delete(k.pt.keys, key)
	k.pt.setCost(k.d, -e.cost(key))
	if e.expire != 0 {
		k.pt.expiring.Add(-1)
	}
	return true
}

func (k ks) expired(key string) {
	if k.del(key) {
		k.d.expired.Add(1)
	}
}

func (pt *part) dropAll(d *DMap) {
	pt.setCost(d, -pt.bytes)
	pt.keys = map[string]*entry{}
	pt.expiring.Store(0)
}

// part returns partition p adjusted to the current table, locked: the
// caller unlocks it. An owner keeps what it holds only if it owned the
// partition in every table since it last looked; a new owner takes over
// its backup copy only if it was a backup in every table since, holds a
// baseline from the previous owner and missed no record after it;
// otherwise it starts empty. A backup whose run is interrupted waits for
// a new baseline.
func (d *DMap) lockPart(p int) (*part, *l2cache.PartitionTable) {
	pt := d.parts[p]
	pt.mu.Lock()
	return pt, d.adjust(pt, p)
}

// adjust is lockPart's work, with pt locked.
func (d *DMap) adjust(pt *part, p int) *l2cache.PartitionTable {
	t := d.cfg.Keeper.Table()
	if pt.epoch == t.Epoch {
		return t
	}
	owner, backup := roles(t, p, d.self)
	start, adoptedAt := d.cfg.Keeper.RunStart(p, d.self, t.Epoch)
	keep := false
	switch {
	case owner && pt.owner && pt.epoch >= start:
		keep = true
	case owner && pt.backup && pt.synced && !pt.tainted && d.backupThrough(p, pt.epoch, start-1):
		keep = true
		d.takeovers.Add(1)
		pt.track, pt.bcast, pt.syncedAt = nil, nil, nil
	case backup && pt.backup && d.backupThrough(p, pt.epoch, t.Epoch):
		// A backup throughout keeps its copy and its standing: every
		// write an owner acknowledged since reached it, in order (a new
		// owner's first batch under a table is a baseline).
		keep = true
	case !owner && (pt.owner || pt.handoff):
		// A former owner keeps its copy for the next owner to fetch
		// (and, as a backup, until that owner's baseline replaces it),
		// but can take over from it no more.
		keep, pt.synced = true, false
		if !pt.handoff {
			pt.handoff, pt.handoffUntil = true, d.cfg.Now().Add(d.handoffTime())
		}
	}
	if !keep || pt.keys == nil {
		if pt.keys != nil {
			pt.dropAll(d)
		}
		pt.keys = map[string]*entry{}
		pt.synced, pt.tainted, pt.seq, pt.handoff = false, false, 0, false
		pt.track, pt.bcast, pt.syncedAt = nil, nil, nil
		if owner {
			d.planFetch(pt, p, start, t.Epoch)
		}
	}
	if owner {
		pt.servingFrom = adoptedAt.Add(d.leaseDuration())
		pt.tainted, pt.handoff = false, false
	} else {
		pt.fetchFrom = ""
	}
	pt.epoch, pt.owner, pt.backup = t.Epoch, owner, backup
	return t
}

// backupThrough reports whether this node was partition p's backup in
// every table from epoch from to epoch to.
func (d *DMap) backupThrough(p int, from, to uint64) bool {
	if to < from {
		return false
	}
	if _, backup, ok := d.cfg.Keeper.RoleAt(p, d.self, to); !ok || !backup {
		return false
	}
	start, _ := d.cfg.Keeper.RunStart(p, d.self, to)
	return start <= from
}

func roles(t *l2cache.PartitionTable, p int, self string) (owner, backup bool) {
	if p >= len(t.Replicas) {
		return false, false
	}
	for i, m := range t.Replicas[p] {
		if m == self {
			return i == 0, i > 0
		}
	}
	return false, false
}

// handleOp serves a request from another member.
func (d *DMap) handleOp(ctx context.Context, from string, body []byte) ([]byte, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	req, err := decodeRequest(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable dmap request: %w", err)
	}
	rep := d.serve(ctx, from, &req)
	return appendReply(nil, &rep), nil
}

// pending is a batch that ran: what must happen before it is answered.
type pending struct {
	w       *replWaiter
	f       *flight // to submit
	notices []notice
	pt      *part
	p       int
}

// serve runs a request from member from: each batch at its partition
// under the partition's lock; then, for each, waits until its changes
// reached every backup and every holder of a changed key was told, and
// answers.
func (d *DMap) serve(ctx context.Context, from string, req *request) reply {
	rep := reply{Batches: make([]batchReply, len(req.Batches))}
	pends := make([]pending, len(req.Batches))
	fs := make([]*flight, 0, len(req.Batches))
	for i := range req.Batches {
		pends[i] = d.runBatch(from, req.Track, &req.Batches[i], &rep.Batches[i])
		if pends[i].f != nil {
			fs = append(fs, pends[i].f)
		}
	}
	// The batches' changes leave together: one message per backup.
	d.submit(fs...)
	for i := range pends {
		pd := &pends[i]
		br := &rep.Batches[i]
		if pd.w != nil {
			if err := pd.w.wait(); err != nil {
				d.cfg.Logger.Warn("dmap: replication to a backup failed", "partition", pd.p, "err", err)
				br.Status, br.Results = statusFailed, nil
			}
		}
		if len(pd.notices) > 0 {
			if err := d.tell(ctx, pd.pt, pd.notices); err != nil {
				d.cfg.Logger.Warn("dmap: a holder was neither told of a change nor excluded", "partition", pd.p, "err", err)
				br.Status, br.Results = statusFailed, nil
			}
		}
	}
	return rep
}

// runBatch runs one partition's operations under its lock.
func (d *DMap) runBatch(from string, track bool, b *batch, br *batchReply) pending {
	if b.Partition < 0 || b.Partition >= len(d.parts) {
		br.Status = statusNotOwner
		return pending{}
	}
	pt, t := d.lockPart(b.Partition)
	defer pt.mu.Unlock()
	br.Epoch = t.Epoch
	if !pt.owner {
		br.Status = statusNotOwner
		return pending{}
	}
	now := d.cfg.Now()
	if !d.leaseValid() || now.Before(pt.servingFrom) || pt.fetchFrom != "" {
		br.Status = statusUnavailable
		return pending{}
	}
	nowMs := now.UnixMilli()
	k := ks{pt, d}
	br.Results = make([]Result, len(b.Ops))
	var changed []string
	flushed := false
	for i := range b.Ops {
		o := &b.Ops[i]
		r := &br.Results[i]
		switch o.Code {
		case CodeScan:
			d.scan(pt, o, nowMs, r)
		case CodeSize:
			r.Int = sizeOf(pt, o)
		case CodeFlush:
			pt.dropAll(d)
			flushed, changed = true, changed[:0]
		case CodeHold:
			d.hold(pt, from, o.Flags&FlagPersist == 0)
		default:
			if exec(k, o, nowMs, r) {
				changed = append(changed, o.Key)
			}
			if track && !o.Code.isWrite() {
				d.register(pt, from, o.Key)
			}
		}
	}
	if len(changed) == 0 && !flushed {
		return pending{}
	}
	recs := make([]record, 0, len(changed)+1)
	if flushed {
		recs = append(recs, record{Flush: true})
	}
	for _, key := range changed {
		recs = append(recs, record{Key: key, E: pt.keys[key]})
	}
	pd := pending{pt: pt, p: b.Partition, notices: d.noticesLocked(pt, b.Partition, flushed, changed)}
	pd.w, pd.f = d.enqueue(pt, b.Partition, t, recs)
	if d.bytes.Load() > d.cfg.MaxBytes {
		go d.evictOver() // not under this partition's lock
	}
	return pd
}

// sizeOf counts partition pt's keys (pt locked) for a CodeSize: all, or
// with N > 0 those of slot N-1, and with FlagExpire only those with a
// deadline (as Redis counts them: keys whose deadline passed count until
// they are removed).
func sizeOf(pt *part, o *Op) int64 {
	if o.N <= 0 && o.Flags&FlagExpire == 0 {
		return int64(len(pt.keys))
	}
	var n int64
	for k, e := range pt.keys {
		if (o.N <= 0 || Slot(k) == int(o.N-1)) && (o.Flags&FlagExpire == 0 || e.expire != 0) {
			n++
		}
	}
	return n
}

// register remembers that member from's clients read key (tracking).
func (d *DMap) register(pt *part, from, key string) {
	if pt.track == nil {
		pt.track = map[string][]string{}
	}
	hs := pt.track[key]
	if slices.Contains(hs, from) {
		return
	}
	pt.track[key] = append(hs, from)
}

// hold registers (or unregisters) from for every change of the partition.
func (d *DMap) hold(pt *part, from string, on bool) {
	if pt.bcast == nil {
		pt.bcast = map[string]bool{}
	}
	if on {
		pt.bcast[from] = true
	} else {
		delete(pt.bcast, from)
	}
}

// notice is an invalidation for one holder.
type notice struct {
	to  string
	inv invalidation
}

// noticesLocked collects the invalidations a change sends: to the members
// that read a changed key (who are forgotten for it: they register again
// when they read it again) and to the members that hold the partition.
// Past MaxTracked keys, every holder is told to drop the partition.
func (d *DMap) noticesLocked(pt *part, p int, all bool, changed []string) []notice {
	byMember := map[string][]string{}
	for m := range pt.bcast {
		byMember[m] = nil
	}
	if len(pt.track) > d.cfg.MaxTracked {
		all = true
	}
	if all {
		for _, hs := range pt.track {
			for _, h := range hs {
				byMember[h] = nil
			}
		}
		pt.track = nil
	} else {
		for _, key := range changed {
			for _, h := range pt.track[key] {
				byMember[h] = append(byMember[h], key)
			}
			delete(pt.track, key)
			for m := range pt.bcast {
				byMember[m] = append(byMember[m], key)
			}
		}
	}
	if len(byMember) == 0 {
		return nil
	}
	out := make([]notice, 0, len(byMember))
	for _, m := range slices.Sorted(maps.Keys(byMember)) {
		pt.invSeq++
		inv := invalidation{Partition: p, Seq: pt.invSeq, All: all, Keys: slices.Compact(byMember[m])}
		out = append(out, notice{to: m, inv: inv})
	}
	return out
}

// tell sends invalidations to their holders at once and waits for each.
// A holder that does not answer in time is excluded from serving
// (Lease.Exclude waits its read lease out: its clients were told to drop
// everything when it ran out) and forgotten.
func (d *DMap) tell(ctx context.Context, pt *part, ns []notice) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.SyncTimeout)
	defer cancel()
	failed := make([]bool, len(ns))
	var wg sync.WaitGroup
	for i := range ns {
		n := &ns[i]
		d.invSent.Add(1)
		if n.to == d.self {
			d.onInvalidation(&n.inv)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.rpc.Call(ctx, n.to, rpcInv, appendInvalidation(nil, &n.inv)); err != nil {
				failed[i] = true
			}
		}()
	}
	wg.Wait()
	var unreached []string
	for i, f := range failed {
		if f {
			unreached = append(unreached, ns[i].to)
		}
	}
	if len(unreached) == 0 {
		return nil
	}
	if d.cfg.Lease == nil {
		return fmt.Errorf("holders %v not told", unreached)
	}
	d.exclusions.Add(uint64(len(unreached)))
	ectx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.SyncTimeout+2*d.cfg.Lease.Duration())
	defer cancel2()
	if err := d.cfg.Lease.Exclude(ectx, unreached); err != nil {
		return err
	}
	pt.mu.Lock()
	for _, h := range unreached {
		delete(pt.bcast, h)
		for k, hs := range pt.track {
			pt.track[k] = slices.DeleteFunc(hs, func(m string) bool { return m == h })
		}
	}
	pt.mu.Unlock()
	return nil
}

// handleInv serves an owner's invalidation.
func (d *DMap) handleInv(_ context.Context, _ string, body []byte) ([]byte, error) {
	inv, err := decodeInvalidation(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable invalidation: %w", err)
	}
	if inv.Partition >= d.cfg.Partitions {
		return nil, fmt.Errorf("%w: invalidation of partition %d", ErrCodec, inv.Partition)
	}
	d.onInvalidation(&inv)
	return nil, nil
}

func (d *DMap) onInvalidation(inv *invalidation) {
	d.invGot.Add(1)
	if inv.All {
		d.invalidate(inv.Partition, nil)
	} else {
		d.invalidate(inv.Partition, inv.Keys)
	}
}

// evictOver drops random keys while the node holds more than MaxBytes,
// going round the partitions (backup copies first).
func (d *DMap) evictOver() {
	for _, backups := range []bool{true, false} {
		for range len(d.parts) {
			if d.bytes.Load() <= d.cfg.MaxBytes {
				return
			}
			pt := d.parts[int(d.evictCursor.Add(1)%uint64(len(d.parts)))]
			pt.mu.Lock()
			if pt.backup == backups || !backups {
				k := ks{pt, d}
				for key := range pt.keys {
					if d.bytes.Load() <= d.cfg.MaxBytes {
						break
					}
					k.del(key)
					d.evictions.Add(1)
				}
			}
			pt.mu.Unlock()
		}
	}
}

// sweep, at an owner: expires keys whose deadline passed (a sample of
// them, as Redis does) and gives new backups their baseline. What it
// changed is to be replicated (pending's flight, which the caller submits
// with the other partitions') and the holders told (finishSweep). again
// reports work in progress that the next tick should look at: a fetch
// from the previous owner, an owner waiting for its lease or its start of
// service, or a former owner's copy kept for the next owner (the sweep
// loop itself looks at partitions with keys that have a deadline).
func (d *DMap) sweep(p int) (_ pending, again bool) {
	pt, t := d.lockPart(p)
	if pt.handoff && !pt.owner && d.cfg.Now().After(pt.handoffUntil) {
		pt.handoff = false
		if !pt.backup {
			pt.dropAll(d)
		}
	}
	if pt.owner && pt.fetchFrom != "" && !pt.fetching {
		pt.fetching = true
		d.wg.Add(1)
		go d.fetch(pt, p, pt.fetchFrom, pt.fetchEpoch)
	}
	if !pt.owner || !d.leaseValid() || d.cfg.Now().Before(pt.servingFrom) || pt.fetchFrom != "" {
		again = pt.owner || pt.handoff
		pt.mu.Unlock()
		return pending{}, again
	}
	now := d.nowMs()
	var gone []string
	n := 0
	for key, e := range pt.keys {
		if n++; n > 64 {
			break
		}
		if e.expire != 0 && e.expire <= now {
			gone = append(gone, key)
		}
	}
	k := ks{pt, d}
	recs := make([]record, 0, len(gone))
	for _, key := range gone {
		k.expired(key)
		recs = append(recs, record{Key: key})
	}
	needSync := false
	for _, b := range backupsOf(t, p) {
		if pt.syncedAt[b] != t.Epoch {
			needSync = true
		}
	}
	if len(recs) == 0 && !needSync {
		pt.mu.Unlock()
		return pending{}, false
	}
	pd := pending{pt: pt, p: p, notices: d.noticesLocked(pt, p, false, gone)}
	pd.w, pd.f = d.enqueue(pt, p, t, recs)
	pt.mu.Unlock()
	return pd, false
}

// finishSweep waits for a sweep's replication and tells the holders of
// the keys it expired. It reports whether the replication reached every
// backup.
func (d *DMap) finishSweep(pd *pending) (ok bool) {
	ok = true
	if err := pd.w.wait(); err != nil {
		d.cfg.Logger.Debug("dmap: syncing backups", "partition", pd.p, "err", err)
		ok = false
	}
	if len(pd.notices) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.SyncTimeout)
		_ = d.tell(ctx, pd.pt, pd.notices)
		cancel()
	}
	return ok
}

func backupsOf(t *l2cache.PartitionTable, p int) []string {
	if p >= len(t.Replicas) || len(t.Replicas[p]) == 0 {
		return nil
	}
	return t.Replicas[p][1:]
}
