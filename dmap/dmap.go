package dmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/cluster/rpc"
	"github.com/shoal-dev/shoal/internal/beat"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/l2cache"
)

// RPC message types of the owner protocol.
const (
	rpcOp   = "dmap.op"   // a request to an owner
	rpcRepl = "dmap.repl" // an owner's changes to a backup
	rpcInv  = "dmap.inv"  // an owner tells a holder that keys changed
	// rpcRepls: an owner's changes to partitions of one backup, in one
	// message (repl.go).
	rpcRepls = "dmap.repls"
)

// Errors.
var (
	// ErrClosed: the map was closed.
	ErrClosed = errors.New("dmap: closed")
	// ErrNotAcked: a write ran at its owner but was not acknowledged (a
	// backup or a holder could not be told in time, or the connection to
	// the owner broke): it may or may not have taken effect.
	ErrNotAcked = errors.New("TRYAGAIN shoal: the write may or may not have been applied (its owner could not confirm it)")
	// ErrNoOwner: no owner answered before the deadline.
	ErrNoOwner = errors.New("CLUSTERDOWN shoal: the partition's owner is not available")
)

// Lease is what the map needs of the node's read lease
// (*l2cache.ReadLease has it).
type Lease interface {
	Valid() bool
	// ValidFor is how much longer the lease stays valid without another
	// renewal (0 when it is not valid).
	ValidFor() time.Duration
	Duration() time.Duration
	Exclude(ctx context.Context, members []string) error
	OnReset(func(l2cache.ResetReason))
	Observe(func([]cp.KV))
}

// Config configures a DMap.
type Config struct {
	// Node is this cluster member: its name and peer RPC.
	Node *cluster.Node
	// Keeper is the node's partition table keeper (the L2 cache's).
	Keeper *l2cache.TableKeeper
	// Lease is the node's read lease. Nil only in tests of the protocol
	// logic: an owner then answers without one.
	Lease Lease
	// Partitions must be the keeper's partition count (default 271).
	Partitions int
	// MaxBytes bounds what this node holds, as owner and backup (default
	// 64 MiB); beyond it random keys are evicted (Stats.Evictions).
	MaxBytes int64
	// SyncTimeout bounds a replication or an invalidation (default 2 s).
	SyncTimeout time.Duration
	// MaxTracked bounds the keys an owner remembers readers of, per
	// partition (default 4096); past it every holder of the partition is
	// told to drop all of it.
	MaxTracked int
	// OnInvalidate is told which keys clients of this node may have
	// cached are no longer current: keys of partition p, every key of p
	// (keys nil), or every key of every partition (p < 0). It must not
	// block for long; it runs before the owner acknowledges the write.
	OnInvalidate func(p int, keys []string)
	// SweepEvery is how often owners sweep the partitions that have work
	// in progress (a new backup to sync, a fetch, keys expiring, a lease
	// to wait for) while there is any (default 50 ms). Every partition is
	// swept at once when the table changes, and this node's clients are
	// told at once when its lease runs out.
	SweepEvery time.Duration
	// IdleSweepEvery is how often owners sweep every partition anyway
	// (default 1 s; at least SweepEvery); partitions with keys that have a
	// deadline are swept every SweepEvery. An idle node walking its 271
	// partitions every 50 ms spent a tenth of its CPU time on it; one
	// that merely looked every 50 ms whether there was work, a tenth of
	// its wake-ups (it now sleeps until IdleSweepEvery, the lease's end,
	// a table change or new work).
	IdleSweepEvery time.Duration
	Now            func() time.Time
	Logger         *slog.Logger
}

// Validate fills the zero settings with their defaults and refuses
// nonsense (a *config.FieldError). It does not look at Node, Keeper and
// Lease.
func (c *Config) Validate() error {
	if c.Partitions < 0 || c.Partitions > 1<<(64-posBits) {
		return config.Invalid("dmap", "Partitions", c.Partitions, fmt.Sprintf("1 to %d", 1<<(64-posBits)))
	}
	if c.MaxBytes < 0 {
		return config.Invalid("dmap", "MaxBytes", c.MaxBytes, "a size (0: 64 MiB)")
	}
	if c.Partitions == 0 {
		c.Partitions = l2cache.DefaultPartitions
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 64 << 20
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = 2 * time.Second
	}
	if c.MaxTracked <= 0 {
		c.MaxTracked = 4096
	}
	if c.SweepEvery <= 0 {
		c.SweepEvery = 50 * time.Millisecond
	}
	if c.IdleSweepEvery <= 0 {
		c.IdleSweepEvery = time.Second
	}
	c.IdleSweepEvery = max(c.IdleSweepEvery, c.SweepEvery)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Stats are a map's counters on this node.
type Stats struct {
	Keys, Bytes                        int64 // held as owner
	BackupKeys                         int64
	Evictions, Expired                 uint64
	RemoteCalls, Retries, NotAcked     uint64
	Replications, FullSyncs, Takeovers uint64
	// ReplMessages: the messages that carried Replications to backups
	// (each carries the batches of many partitions bound for one backup).
	ReplMessages                        uint64
	InvalidationsSent, InvalidationsGot uint64
	Exclusions                          uint64
	// Fetches: partitions taken from their previous owner; EmptyStarts:
	// partitions this node began to own with nothing to take over.
	Fetches, EmptyStarts uint64
}

// DMap is this node's part of the named maps. Its methods are safe for
// concurrent use.
type DMap struct {
	cfg   Config
	rpc   *rpc.Node
	self  string
	parts []*part

	bytes       atomic.Int64
	evictCursor atomic.Uint64

	evictions, expired, remoteCalls, retries, notAcked atomic.Uint64
	replications, fullSyncs, takeovers, replMessages   atomic.Uint64
	invSent, invGot, exclusions, fetches, emptyStarts  atomic.Uint64

	hmu     sync.Mutex
	holder  []holderView            // what this node knows of each partition's owner
	checked *l2cache.PartitionTable // the table holder was last compared with
	wasOK   bool                    // the lease was valid at the last sweep
	// sweepAll asks the sweep loop to walk every partition at its next
	// tick (a backup's baseline failed to reach it).
	sweepAll atomic.Bool
	// kick wakes the sweep loop early: work it must look at soon
	// (sweepAll, a first key with a deadline in a partition).
	kick chan struct{}
	// sweepWakes counts the sweep loop's wake-ups (for tests).
	sweepWakes atomic.Uint64
	stop       chan struct{}
	wg         sync.WaitGroup
	once       sync.Once
	closed     atomic.Bool
	leaseMu    sync.Mutex

	// Replication links to the backups (repl.go); ctx ends at Close.
	ctx         context.Context
	cancel      context.CancelFunc
	lmu         sync.Mutex
	links       map[string]*link
	linksClosed bool
	oldPeers    sync.Map // backups that do not know rpcRepls
}

// holderView is a partition's owner as this node last saw it: when it
// changes, what clients cached from the old owner is invalidated.
type holderView struct {
	owner string
	since uint64
}

// New starts this node's part of the maps and registers the owner
// protocol on the node's peer RPC. Close stops it.
func New(cfg Config) (*DMap, error) {
	if cfg.Node == nil || cfg.Keeper == nil {
		return nil, errors.New("dmap: Config.Node and Config.Keeper are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &DMap{cfg: cfg, rpc: cfg.Node.RPC(), self: cfg.Node.Name(), stop: make(chan struct{}), kick: make(chan struct{}, 1),
		parts: make([]*part, cfg.Partitions), holder: make([]holderView, cfg.Partitions)}
	for i := range d.parts {
		d.parts[i] = &part{}
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.links = map[string]*link{}
	d.rpc.Handle(rpcOp, d.handleOp)
	// A backup applies replications on the connection's reader (they
	// take a partition's lock, no I/O), except while it waits for the
	// owner's table.
	d.rpc.HandleInline(rpcRepl, d.handleRepl)
	d.rpc.HandleInline(rpcRepls, d.handleRepls)
	d.rpc.Handle(rpcInv, d.handleInv)
	d.rpc.Handle(rpcFetch, d.handleFetch)
	if cfg.Lease != nil {
		// A renewal adopts the table it read before the lease it renews
		// takes effect, and what changed hands is invalidated then.
		cfg.Lease.Observe(func(kvs []cp.KV) {
			cfg.Keeper.Observe(kvs)
			d.checkTable()
		})
		cfg.Lease.OnReset(func(l2cache.ResetReason) { d.invalidate(-1, nil) })
	}
	d.wg.Add(1)
	go d.sweepLoop()
	return d, nil
}

// Close stops the map's goroutines. Safe to call twice. The RPC handlers
// stay registered but answer ErrClosed.
func (d *DMap) Close() {
	d.once.Do(func() {
		d.closed.Store(true)
		close(d.stop)
		d.lmu.Lock()
		d.linksClosed = true // no sender starts after this
		d.lmu.Unlock()
		d.cancel() // the senders' calls end
	})
	d.wg.Wait()
}

// Partitions is the number of partitions.
func (d *DMap) Partitions() int { return d.cfg.Partitions }

// Self is this node's name.
func (d *DMap) Self() string { return d.self }

// Table is the node's current partition table.
func (d *DMap) Table() *l2cache.PartitionTable { return d.cfg.Keeper.Table() }

// Owner is the owner of partition p in this node's table ("" if none).
func (d *DMap) Owner(p int) string { return d.cfg.Keeper.Table().Owner(p) }

// Stats returns the counters.
func (d *DMap) Stats() Stats {
	s := Stats{Evictions: d.evictions.Load(), Expired: d.expired.Load(), RemoteCalls: d.remoteCalls.Load(),
		Retries: d.retries.Load(), NotAcked: d.notAcked.Load(), Replications: d.replications.Load(),
		FullSyncs: d.fullSyncs.Load(), Takeovers: d.takeovers.Load(), ReplMessages: d.replMessages.Load(), InvalidationsSent: d.invSent.Load(),
		InvalidationsGot: d.invGot.Load(), Exclusions: d.exclusions.Load(),
		Fetches: d.fetches.Load(), EmptyStarts: d.emptyStarts.Load()}
	for _, pt := range d.parts {
		pt.mu.Lock()
		if pt.owner {
			s.Keys += int64(len(pt.keys))
			s.Bytes += pt.bytes
		} else if pt.backup {
			s.BackupKeys += int64(len(pt.keys))
		}
		pt.mu.Unlock()
	}
	return s
}

func (d *DMap) leaseDuration() time.Duration {
	if d.cfg.Lease == nil {
		return 0
	}
	return d.cfg.Lease.Duration()
}

func (d *DMap) leaseValid() bool { return d.cfg.Lease == nil || d.cfg.Lease.Valid() }

// wakeSweep makes the sweep loop look again soon.
func (d *DMap) wakeSweep() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *DMap) nowMs() int64 { return d.cfg.Now().UnixMilli() }

// invalidate tells the node's clients (OnInvalidate).
func (d *DMap) invalidate(p int, keys []string) {
	if d.cfg.OnInvalidate != nil {
		d.cfg.OnInvalidate(p, keys)
	}
}

// checkTable invalidates what this node's clients cached from partitions
// whose owner changed (or whose owner's run of tables, as adopted here,
// was interrupted) since it last looked.
func (d *DMap) checkTable() {
	t := d.cfg.Keeper.Table()
	if len(t.Replicas) != d.cfg.Partitions {
		return
	}
	d.hmu.Lock()
	if t == d.checked {
		// holder is a function of the table and of the keeper's history,
		// which changes only when the keeper adopts a new table.
		d.hmu.Unlock()
		return
	}
	d.checked = t
	var moved []int
	for p := range d.holder {
		v := holderView{owner: t.Owner(p), since: d.cfg.Keeper.OwnerSince(p, t.Epoch)}
		if v != d.holder[p] {
			if d.holder[p].owner != "" {
				moved = append(moved, p)
			}
			d.holder[p] = v
		}
	}
	d.hmu.Unlock()
	for _, p := range moved {
		d.invalidate(p, nil)
	}
}

// sweepLoop expires keys and syncs backups at owners, and watches this
// node's table and lease for its clients. Every partition is swept when
// the table or the lease's validity changed since the last full sweep, a
// baseline failed to reach a backup, or at the first instant of the
// process's beat (package beat) at most IdleSweepEvery after the last full
// sweep; in between, only the partitions that the last sweep left with
// work in progress and those holding keys with a deadline, every
// SweepEvery while there are any. With none, the loop sleeps until the
// next full sweep, the moment the lease runs out (its clients are told
// then, as when it looked every SweepEvery), a new table, or a kick
// (wakeSweep).
func (d *DMap) sweepLoop() {
	defer d.wg.Done()
	t := time.NewTimer(d.cfg.SweepEvery)
	defer t.Stop()
	var (
		walked      bool // a full sweep was made
		walkedEpoch uint64
		walkedLease bool
		walkDue     time.Time // the next full sweep, on the process's beat
		all         = make([]int, len(d.parts))
		busy        []int // partitions with work in progress
	)
	for p := range all {
		all[p] = p
	}
	changed := d.cfg.Keeper.Changed()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		case <-d.kick:
		case <-changed:
		}
		d.sweepWakes.Add(1)
		// Asked before the table is read: a table adopted from here on
		// wakes the next wait.
		changed = d.cfg.Keeper.Changed()
		d.checkTable()
		ok := d.leaseValid()
		if !ok && d.wasOK {
			// The lease ran out: an owner may acknowledge writes without
			// telling this node once it has waited the lease out.
			d.invalidate(-1, nil)
		}
		d.wasOK = ok
		parts := busy
		now, epoch := time.Now(), d.cfg.Keeper.Table().Epoch
		if d.sweepAll.Swap(false) || !walked || epoch != walkedEpoch || ok != walkedLease || !now.Before(walkDue) {
			// The next one at the next instant of the process's beat
			// (package beat): at most IdleSweepEvery from now, and at the
			// moment the node's other periodic chores wake it.
			walked, walkedEpoch, walkedLease, walkDue = true, epoch, ok, now.Add(beat.Until(d.cfg.IdleSweepEvery))
			parts = all
		} else {
			// Keys with a deadline are expired on time, as when every
			// partition was swept at every tick (written since the last
			// sweep too).
			for p, pt := range d.parts {
				if pt.expiring.Load() > 0 && !slices.Contains(busy, p) {
					parts = append(parts, p)
				}
			}
		}
		if len(parts) > 0 {
			busy = d.sweepParts(parts)
		}
		t.Reset(d.nextSweep(len(busy) > 0, ok, walkDue))
	}
}

// sweepParts sweeps parts and returns those with work in progress.
func (d *DMap) sweepParts(parts []int) (busy []int) {
	// Every partition's changes leave together (one message per backup);
	// then the sweep waits for them.
	var pends []pending
	var fs []*flight
	for _, p := range parts {
		pd, again := d.sweep(p)
		if pd.w != nil || len(pd.notices) > 0 {
			pends = append(pends, pd)
			fs = append(fs, pd.f)
		}
		if again {
			busy = append(busy, p)
		}
	}
	d.submit(fs...)
	for i := range pends {
		if !d.finishSweep(&pends[i]) && !slices.Contains(busy, pends[i].p) {
			busy = append(busy, pends[i].p)
		}
	}
	return busy
}

// nextSweep is how long the sweep loop may sleep: SweepEvery while a
// partition has work in progress or keys with a deadline, else until the
// next full sweep or the end of a valid lease, whichever comes first.
func (d *DMap) nextSweep(busy, leaseOK bool, walkDue time.Time) time.Duration {
	if busy {
		return d.cfg.SweepEvery
	}
	for _, pt := range d.parts {
		if pt.expiring.Load() > 0 {
			return d.cfg.SweepEvery
		}
	}
	wait := time.Until(walkDue)
	if leaseOK && d.cfg.Lease != nil {
		wait = min(wait, d.cfg.Lease.ValidFor())
	}
	return max(wait, time.Millisecond)
}

// MaxBytes is the bound on what this node holds.
func (d *DMap) MaxBytes() int64 { return d.cfg.MaxBytes }
