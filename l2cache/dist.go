package l2cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster/rpc"
)

// DISTRIBUTED mode: every key belongs to one of the table's partitions,
// and a partition's owner holds its entries, its invalidation stamps and
// its soft locks; the backups hold copies, replicated synchronously. The
// stale-put argument of the package doc holds at the owner, on the
// owner's clock: a miss hands out a ticket (the owner's name and a stamp),
// and the owner accepts a put only with a ticket it issued after its
// latest invalidation of the key and after it took the partition over.

// RPC message types of the owner protocol: one per kind of request, so a
// message that claims to be one thing and is another is refused.
const (
	rpcGet    = "l2.get"
	rpcPut    = "l2.put"
	rpcChange = "l2.change"
	rpcRepl   = "l2.repl"
	rpcNear   = "l2.near" // an owner tells a near holder to drop a key
	// rpcGets is several gets of one owner's keys in one message (NEAR
	// mode: a page of a list's rows; nearRegion.getMany).
	rpcGets = "l2.gets"
	// rpcPutNote is a put that expects no answer (one-way; NEAR mode).
	rpcPutNote = "l2.putn"
)

// ownerKind is what an owner operation does.
type ownerKind uint8

const (
	kindGet        ownerKind = iota + 1 // read a key: a hit, or a miss with a ticket
	kindPut                             // a put-from-load with its ticket (replicated as the entry)
	kindInvalidate                      // drop a key after a write
	kindLock                            // soft-lock a key before an update
	kindUnlock                          // release a soft lock and drop the key
	// kindSpaces: an update of a keyed query space, at the owner of the
	// space's partition (keyed.go). Key is the space, Region is empty.
	kindSpaces
)

// changeKind is the owner operation of a region change.
func changeKind(o op) ownerKind {
	switch o {
	case opLock:
		return kindLock
	case opUnlock:
		return kindUnlock
	}
	return kindInvalidate
}

// rpcType is the message type that carries kind to an owner.
func (k ownerKind) rpcType() string {
	switch k {
	case kindGet:
		return rpcGet
	case kindPut:
		return rpcPut
	}
	return rpcChange
}

// ErrNotOwner is the answer of a node asked about a partition it does not
// own in its table; the caller waits for a newer table and retries.
var ErrNotOwner = errors.New("l2cache: not the partition's owner")

// ticket is what a miss hands out: a put must present it to the same
// owner, which refuses it if anything invalidated the key since.
type ticket struct {
	Owner string
	Stamp uint64
}

// distOp is a request to a partition's owner, and the replication of its
// effect to the backups.
type distOp struct {
	// Encoded by hand (codec.go): it is on the path of every remote get.
	Kind ownerKind
	// Near: a get from a node that keeps a near copy of what it reads
	// (NEAR mode): the owner remembers it and tells it of every change
	// to the partition before acknowledging the change. On the
	// replication of a change: the backup is also one of the key's near
	// holders, and the replication carries the owner's notice to it,
	// numbered in Ticket.Stamp (send).
	Near      bool
	Partition int
	Region    string
	Key       string
	Value     []byte
	Spaces    []string
	Ticket    ticket
	// Replication only: the owner's stamp for the change, and the
	// partition's replication sequence number.
	Stamp uint64
	Seq   uint64
	Epoch uint64
	// Upd names the query-space update a change carries (updates.go).
	Upd updateID
	// Want: a get of a query result whose answer the reader would keep
	// (NEAR); Need, the updates of its spaces the reader applied that
	// the owner may not have. The owner vouches for its answer if it
	// applied them all (distReply.Vouched). On the wire these ride in
	// Spaces (appendSpacesNamed).
	Want bool
	Need []updateID
}

type distReply struct {
	NotOwner bool
	// Unavailable: the owner may not answer yet (its read lease is not
	// valid, or it took the partition over less than a lease ago). A get
	// reads through; a change retries.
	Unavailable bool
	Epoch       uint64
	Hit         bool
	Value       []byte
	Ticket      ticket
	// Floor is the stamp of the key's latest invalidation at the owner,
	// so the caller can tell whether a load in flight is fresh enough to
	// join.
	Floor uint64
	// Refused: a put was refused; on a get's miss, the key is soft-locked
	// (its load is neither kept near nor put).
	Refused bool
	// SpacesAt: the answer to a change that carried a query-space update
	// (distOp.Spaces): the members that applied it — this owner, each
	// backup and near holder its messages reached (or that was excluded),
	// and each other member the owner sent it to (spreadSpaces).
	SpacesAt []string
	// Vouched: the answer to a get that wanted it (distOp.Want) from an
	// owner that had applied every update the get named (distOp.Need)
	// before it read: the reader may keep a hit. An owner of an older
	// build never vouches.
	Vouched bool
}

// dist is this node's part of the partitioned map.
type dist struct {
	// onNear, set by the NEAR backend, receives the owner's change
	// messages addressed to this node (from is the owner).
	onNear atomic.Pointer[func(from string, o distOp)]

	c      *Cache
	rpc    *rpc.Node
	self   string
	keeper *TableKeeper

	mu    sync.Mutex
	parts map[int]*dpart

	// bytes is the cost of every entry this node holds, as owner or
	// backup; puts evict to keep it within Config.MaxCost.
	bytes       atomic.Int64
	evictCursor atomic.Uint64

	// unused: no view of the cluster reads from this mode (lockDropper):
	// a soft lock that arrives meanwhile — taken by a writer still under
	// a view that writes here — invalidates, and is not held.
	unused atomic.Bool

	// batches queue puts' replications per backup (replbatch.go).
	bmu     sync.Mutex
	batches map[string]*replBatch

	// The soft locks' sweeps (sweepLock) run on timers; close stops
	// those in progress (stopSweeps cancels their context) and waits for
	// them, and a sweep whose timer fires after close does nothing.
	sweepMu    sync.Mutex
	closed     bool
	sweeps     sync.WaitGroup
	sweepCtx   context.Context
	stopSweeps context.CancelFunc
}

// dpart is this node's copy of one partition, as owner or backup.
type dpart struct {
	mu     sync.Mutex
	epoch  uint64 // table epoch this copy's role was set for
	owner  bool
	backup bool
	floor  uint64 // no ticket or entry stamped at or below it is trusted
	// folded is where inv's stamps went when it reached its bound
	// (foldInvLocked): no ticket at or below it is honoured. Entries
	// stamped below it stay valid, as each is newer than its key's last
	// change (a change deletes the key's entry).
	folded  uint64
	entries map[string]*entry
	inv     map[string]uint64 // store key → stamp of its last invalidation
	cleared map[string]uint64 // region → stamp of its last clear
	locks   map[string]*softLock
	seq     uint64 // owner: last sent; backup: last applied (0: none yet)
	tainted bool   // backup missed a replication: start empty on takeover
	bytes   int64  // cost of entries
	// servingFrom is when an owner may first answer: a lease after it
	// adopted the table that made it the owner, when every read lease the
	// previous owner could hold under an older table has run out.
	servingFrom time.Time
	// holders are the members that may keep near copies of the
	// partition's keys (NEAR mode), told of changes to them (near.go's
	// nearHolders). Owner only; forgotten with the partition.
	holders *nearHolders
	// sent is closed when the messages of the partition's latest change
	// have been handed to the connections: the next change's messages
	// wait for it, so that they leave in sequence order (nil: none yet).
	sent chan struct{}
}

// entryCost is what an entry counts against the budget: its value, its
// key and the bookkeeping around them.
func entryCost(skey string, e *entry) int64 { return int64(len(e.value) + len(skey) + 64) }

// setLocked stores an entry. The caller calls evictOver after unlocking.
func (dp *dpart) setLocked(d *dist, skey string, e *entry) {
	dp.delLocked(d, skey)
	c := entryCost(skey, e)
	dp.entries[skey] = e
	dp.bytes += c
	d.bytes.Add(c)
}

// evictOver drops entries while the node is over its budget, going round
// the partitions from where the last eviction stopped and taking entries
// in each map's (random) order: random eviction, spread evenly, without a
// global index. It locks one partition at a time.
func (d *dist) evictOver() {
	if d.bytes.Load() <= d.c.cfg.MaxCost {
		return
	}
	d.mu.Lock()
	parts := make([]int, 0, len(d.parts))
	for p := range d.parts {
		parts = append(parts, p)
	}
	d.mu.Unlock()
	slices.Sort(parts)
	for range len(parts) {
		if d.bytes.Load() <= d.c.cfg.MaxCost {
			return
		}
		p := parts[int(d.evictCursor.Add(1)%uint64(len(parts)))]
		d.mu.Lock()
		dp := d.parts[p]
		d.mu.Unlock()
		dp.mu.Lock()
		for k := range dp.entries {
			if d.bytes.Load() <= d.c.cfg.MaxCost {
				break
			}
			dp.delLocked(d, k)
			d.c.stats.Evictions.Add(1)
		}
		dp.mu.Unlock()
	}
}

// delLocked drops an entry and returns its cost.
func (dp *dpart) delLocked(d *dist, skey string) int64 {
	e := dp.entries[skey]
	if e == nil {
		return 0
	}
	c := entryCost(skey, e)
	delete(dp.entries, skey)
	dp.bytes -= c
	d.bytes.Add(-c)
	return c
}

// dropAllLocked drops every entry.
func (dp *dpart) dropAllLocked(d *dist) {
	d.bytes.Add(-dp.bytes)
	dp.bytes = 0
	clear(dp.entries)
}

// liveLocked returns the entry of skey unless its TTL has passed (then it
// is dropped).
func (dp *dpart) liveLocked(d *dist, skey string, now time.Time) *entry {
	e := dp.entries[skey]
	if e != nil && !e.expires.IsZero() && now.After(e.expires) {
		dp.delLocked(d, skey)
		return nil
	}
	return e
}

// newEntry stamps a value with the TTL from now.
func (d *dist) newEntry(v []byte, stamp uint64, now time.Time) *entry {
	e := &entry{value: v, stamp: stamp}
	if d.c.cfg.TTL > 0 {
		e.expires = now.Add(d.c.cfg.TTL)
	}
	return e
}

func newDist(c *Cache) *dist {
	d := &dist{c: c, rpc: c.cfg.Node.RPC(), self: c.cfg.Node.Name(), keeper: c.cfg.Keeper, parts: map[int]*dpart{}}
	d.sweepCtx, d.stopSweeps = context.WithCancel(context.Background())
	// A get and a backup's replication only take the partition's lock:
	// they are served on the connection's reader goroutine, without a
	// goroutine or a timer per request, and replications in the order the
	// owner sent them. Puts and changes wait for the backups.
	d.rpc.HandleInline(rpcGet, d.handler(rpcGet))
	d.rpc.HandleInline(rpcGets, d.handleGets)
	d.rpc.Handle(rpcPut, d.handler(rpcPut))
	d.rpc.Handle(rpcChange, d.handler(rpcChange))
	d.rpc.HandleInline(rpcRepl, d.handleRepl)
	d.rpc.HandleOneway(rpcReplBatch, d.handleReplBatch)
	d.rpc.HandleOneway(rpcPutNote, d.handlePutNote)
	if c.cfg.Lease != nil {
		// A renewal adopts the table it read before the lease it renews
		// takes effect: an owner with a valid lease owns by a table at
		// least as new as its last renewal.
		c.cfg.Lease.Observe(d.keeper.Observe)
	}
	return d
}

// part returns this node's copy of partition p, adjusted to the current
// table. An owner keeps what it holds only if it owned the partition in
// every table since it last looked (the keeper remembers the tables it
// adopted); a new owner takes over from its backup copy (re-stamped on its
// own clock) only if it was the backup in every table since it last
// looked and missed no replication; otherwise, like a node that held
// nothing, it starts empty. A new owner answers nothing until a lease has
// passed since it adopted the table that made it the owner.
func (d *dist) part(p int) (*dpart, *PartitionTable) {
	t := d.keeper.Table()
	d.mu.Lock()
	dp := d.parts[p]
	if dp == nil {
		dp = &dpart{}
		d.parts[p] = dp
	}
	d.mu.Unlock()
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.epoch == t.Epoch {
		return dp, t
	}
	owner, backup := roles(t, p, d.self)
	start, adoptedAt := d.keeper.RunStart(p, d.self, t.Epoch)
	switch {
	case owner && dp.owner && dp.epoch >= start:
		// Ours in every table since: keep everything.
	case owner && dp.backup && !dp.tainted && d.backupThrough(p, dp.epoch, start-1):
		dp.takeOver(d.c.tick())
		d.dropQueries(dp)
	default:
		if dp.entries != nil {
			dp.dropAllLocked(d)
		}
		dp.reset(d.c.tick())
	}
	if owner {
		dp.servingFrom = adoptedAt.Add(d.leaseDuration())
	}
	dp.epoch, dp.owner, dp.backup = t.Epoch, owner, backup
	if !owner {
		dp.seq = 0 // a backup takes the next replication as its baseline
	}
	return dp, t
}

// backupThrough reports whether this node was partition p's backup in
// every table from epoch from to epoch to.
func (d *dist) backupThrough(p int, from, to uint64) bool {
	if to < from {
		return false
	}
	if _, backup, ok := d.keeper.RoleAt(p, d.self, to); !ok || !backup {
		return false
	}
	start, _ := d.keeper.RunStart(p, d.self, to)
	return start <= from
}

// dropQueries drops a taken-over copy's query results. They were checked
// against the old owner's query-space stamps, which mean nothing on this
// node's clock, and the re-stamp of a takeover would make a result cached
// before a later update of its spaces valid again.
func (d *dist) dropQueries(dp *dpart) {
	for k, e := range dp.entries {
		if e.query {
			dp.delLocked(d, k)
		}
	}
}

// leaseDuration is how long, on this node's clock, a former owner may
// still serve under its read lease after this node adopted the table that
// took the partition from it: the lease and the margin for clock rates
// (0 without a lease).
func (d *dist) leaseDuration() time.Duration {
	if d.c.cfg.Lease == nil {
		return 0
	}
	return d.c.cfg.Lease.outlast()
}

func roles(t *PartitionTable, p int, self string) (owner, backup bool) {
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

func (dp *dpart) reset(stamp uint64) {
	dp.entries, dp.inv, dp.cleared, dp.locks = map[string]*entry{}, map[string]uint64{}, map[string]uint64{}, map[string]*softLock{}
	dp.floor, dp.folded, dp.tainted, dp.holders = stamp, 0, false, nil
}

// takeOver re-stamps the backup's entries with a stamp of this node's
// clock: they were current when the old owner stopped (every acknowledged
// invalidation was replicated here first), and the old owner's stamps mean
// nothing on this node's clock.
func (dp *dpart) takeOver(stamp uint64) {
	for k, e := range dp.entries {
		dp.entries[k] = &entry{value: e.value, stamp: stamp, expires: e.expires, query: e.query}
	}
	dp.inv, dp.cleared, dp.holders = map[string]uint64{}, map[string]uint64{}, nil
	dp.floor, dp.folded = stamp-1, 0 // entries stamped `stamp` stay valid; older tickets do not
	if dp.locks == nil {
		dp.locks = map[string]*softLock{}
	}
}

// missCause says why a get of skey is a miss at the owner (the stats'
// causes).
func (dp *dpart) missCause(region, skey string, e *entry, locked bool, spaces uint64) int {
	switch {
	case locked:
		return ownerMissLocked
	case e == nil && dp.inv[skey] != 0:
		return ownerMissKey
	case e == nil:
		return ownerMissAbsent
	case e.stamp <= dp.inv[skey]:
		return ownerMissKey
	case e.stamp <= spaces:
		return ownerMissSpaces
	case e.stamp <= dp.cleared[region]:
		return ownerMissRegion
	}
	return ownerMissPartition
}

// readThrough is the cause of a get that reads through: the owner could
// not be reached (err), or could not answer yet.
func readThrough(err error) int {
	if err != nil {
		return readThroughError
	}
	return readThroughUnavailable
}

// sendsDone reports whether the messages of the partition's latest change
// have been handed to the connections. Called with dp.mu held.
func (dp *dpart) sendsDone() bool {
	if dp.sent == nil {
		return true
	}
	select {
	case <-dp.sent:
		return true
	default:
		return false
	}
}

// floorLocked is the stamp below which nothing about key is trusted: no
// entry stamped at or below it is served, and no ticket honoured.
func (dp *dpart) floorLocked(region, skey string) uint64 {
	return max(dp.floor, dp.inv[skey], dp.cleared[region])
}

// ticketFloorLocked is the stamp at or below which no ticket for key is
// honoured: floorLocked, and the per-key stamps folded away.
func (dp *dpart) ticketFloorLocked(region, skey string) uint64 {
	return max(dp.floorLocked(region, skey), dp.folded)
}

// foldInvLocked bounds inv, the per-key stamps of the partition's
// changes, which would otherwise keep one stamp for every key ever
// changed: past the bound they are dropped and stamp, this change's
// (above every one of them), becomes the floor of the tickets honoured.
// A ticket issued before the fold is refused, so a load that began
// before it is not put (a miss later, not a stale entry); the entries
// stay, each newer than its key's last change. Called with dp.mu held.
func (dp *dpart) foldInvLocked(d *dist, stamp uint64) {
	if len(dp.inv) < d.holderBound() {
		return
	}
	clear(dp.inv)
	dp.folded = max(dp.folded, stamp)
	d.c.stats.StampFolds.Add(1)
}

func (dp *dpart) lockedLocked(skey string, now time.Time) bool {
	l := dp.locks[skey]
	if l == nil {
		return false
	}
	if now.After(l.expires) && !l.untold {
		l.stopSweep()
		delete(dp.locks, skey)
		return false
	}
	return true
}

// soleLockLocked reports whether skey is soft-locked, by one writer
// only since its lock was taken (softLock.concurrent): the unlock that
// ends it follows the last commit of the key.
func (dp *dpart) soleLockLocked(skey string, now time.Time) bool {
	if !dp.lockedLocked(skey, now) {
		return false
	}
	l := dp.locks[skey]
	return l.count == 1 && !l.concurrent
}

// keepRowLocked keeps the row an unlock stamped unlocked carried as the
// key's entry, stamped just above the unlock (which set the key's floor
// to unlocked): the owner when it applies the unlock, and each backup
// when it applies the replication.
func (dp *dpart) keepRowLocked(d *dist, skey string, row []byte, unlocked uint64, now time.Time) {
	dp.setLocked(d, skey, d.newEntry(row, unlocked+1, now))
}

// call runs o at the partition's owner, here or over the peer RPC,
// retrying while the owner is not known or says it is not the owner (or,
// for a change, cannot answer yet), until ctx ends.
func (d *dist) call(ctx context.Context, o distOp) (distReply, string, error) {
	backoff := 2 * time.Millisecond
	for {
		t := d.keeper.Table()
		owner := t.Owner(o.Partition)
		var rep distReply
		var err error
		switch {
		case owner == "":
			err = fmt.Errorf("%w: no partition table yet", ErrNotOwner)
		case owner == d.self:
			rep = d.apply(ctx, d.self, o)
		default:
			rep, err = d.remote(ctx, owner, o)
		}
		readOnly := o.Kind == kindGet || o.Kind == kindPut
		if err == nil && !rep.NotOwner && (!rep.Unavailable || readOnly) {
			return rep, owner, nil
		}
		// Every operation can be repeated: gets and puts (with the same
		// ticket) trivially, invalidations because a second one only
		// stamps again, locks at worst hold a little longer (until
		// LockTimeout). So a lost connection is retried like a refusal.
		if err != nil && !errors.Is(err, ErrNotOwner) && !errors.Is(err, rpc.ErrUnreachable) && !errors.Is(err, rpc.ErrConnLost) {
			return rep, owner, err
		}
		select {
		case <-ctx.Done():
			return rep, owner, fmt.Errorf("l2cache: partition %d: %w (last: %v)", o.Partition, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func (d *dist) remote(ctx context.Context, owner string, o distOp) (distReply, error) {
	body := appendOp(make([]byte, 0, 64+len(o.Region)+len(o.Key)+len(o.Value)), &o)
	d.c.stats.RemoteCalls.Add(1)
	d.c.stats.RemoteByKind[remoteKind(o.Kind)].Add(1)
	d.c.stats.RemoteBytes.Add(uint64(len(body)))
	resp, err := d.rpc.Call(ctx, owner, o.Kind.rpcType(), body)
	if err != nil {
		return distReply{}, err
	}
	d.c.stats.RemoteBytes.Add(uint64(len(resp)))
	rep, err := decodeReply(resp)
	if err != nil {
		return distReply{}, fmt.Errorf("l2cache: unreadable reply from %s: %w", owner, err)
	}
	return rep, nil
}

// handler serves an owner request of one message type; a body of another
// kind is refused.
func (d *dist) handler(typ string) rpc.Handler {
	return func(ctx context.Context, from string, body []byte) ([]byte, error) {
		o, err := decodeOp(body)
		if err != nil {
			return nil, fmt.Errorf("unreadable cache operation: %w", err)
		}
		if o.Kind.rpcType() != typ {
			return nil, fmt.Errorf("%w: a %s message carrying operation kind %d", ErrCodec, typ, o.Kind)
		}
		rep := d.apply(ctx, from, o)
		return appendReply(make([]byte, 0, 32+len(rep.Value)+len(rep.Ticket.Owner)), &rep), nil
	}
}

// apply runs an operation from member from at the owner: reads, puts,
// invalidations and locks, replicating every change to the backups, and
// telling every near holder, before answering, within ctx (the caller's
// deadline, carried by the RPC).
func (d *dist) apply(ctx context.Context, from string, o distOp) distReply {
	dp, t := d.part(o.Partition)
	dp.mu.Lock()
	if !dp.owner {
		dp.mu.Unlock()
		return distReply{NotOwner: true, Epoch: t.Epoch}
	}
	now := d.c.cfg.Now()
	if !d.c.valid() || now.Before(dp.servingFrom) {
		dp.mu.Unlock()
		return distReply{Unavailable: true, Epoch: t.Epoch}
	}
	skey := o.Region + "\x00" + o.Key
	var rep distReply
	var repl *distOp
	var kept []byte // the row an unlock left at this owner
	var near *nearNotice
	switch o.Kind {
	case kindGet:
		// Before the floor is read: an update named in Need and applied
		// here is stamped below it, so a hit is newer than the update.
		vouched := o.Want && d.c.appliedAll(o.Need)
		floor := max(dp.floorLocked(o.Region, skey), d.c.spacesStamp(o.Spaces))
		tfloor := max(floor, dp.folded) // for the ticket of a miss
		e := dp.liveLocked(d, skey, now)
		locked := dp.lockedLocked(skey, now)
		if o.Near && !locked {
			// Registered before the answer, under the partition's lock:
			// every change of the key after this read is sent to the
			// reader, which keeps what the owner answered, or (after a
			// miss) what it then loaded. A read of a soft-locked key is
			// not: it keeps nothing (below). A query result over a keyed
			// space registers its reader under the space (keyed.go): the
			// space's updates come here, and are sent on to it.
			hkey := skey
			if ks, ok := keyedOf(o.Spaces); ok {
				hkey = spaceHolderKey(ks)
			}
			dp.addHolder(d, hkey, from)
		}
		if e != nil && e.stamp > floor && !locked {
			rep = distReply{Hit: true, Value: e.value, Vouched: vouched}
		} else {
			d.c.stats.OwnerMisses[dp.missCause(o.Region, skey, e, locked, d.c.spacesStamp(o.Spaces))].Add(1)
			// Refused, on a miss: the key is soft-locked, so the reader
			// neither keeps its load (the unlock would drop it) nor puts
			// it (the put would be refused) — the Lock contract: reads
			// are misses and loads are not cached.
			rep = distReply{Ticket: ticket{Owner: d.self, Stamp: d.c.tick()}, Floor: tfloor, Refused: locked}
		}
	case kindPut:
		if !dp.acceptPutLocked(d, o, skey, now) {
			rep.Refused = true
			break
		}
		if o.queryResult() {
			break // not replicated (queryResult)
		}
		repl = &distOp{Kind: kindPut, Region: o.Region, Key: o.Key, Value: o.Value, Spaces: o.Spaces, Stamp: o.Ticket.Stamp}
	case kindInvalidate, kindLock, kindUnlock:
		stamp := d.c.tick()
		keep := o.Kind == kindUnlock && len(o.Value) > 0 && dp.soleLockLocked(skey, now)
		dp.applyChange(d, o.Kind, skey, stamp, now.Add(d.c.cfg.LockTimeout))
		repl = &distOp{Kind: o.Kind, Region: o.Region, Key: o.Key, Stamp: stamp, Spaces: o.Spaces, Upd: o.Upd}
		if keep {
			// The unlock carries the row its writer committed, and no
			// other writer held the lock meanwhile: that row is the
			// database's now, so the owner keeps it (stamped just above
			// the unlock's own stamp, as every backup does), and the
			// near holders keep it in place of their copies.
			dp.keepRowLocked(d, skey, o.Value, stamp, now)
			repl.Value = o.Value
			kept = o.Value
			d.c.stats.UnlockValues.Add(1)
		}
		if len(o.Spaces) > 0 {
			// The write's query-space update rides on the change
			// (changeSpaces): applied here, and carried by the
			// replication and the near notices.
			d.c.markSpaces(o.Spaces, o.Upd)
			rep.SpacesAt = []string{d.self}
		}
	case kindSpaces:
		if !d.spacesOpLocked(o, skey) {
			dp.mu.Unlock()
			return distReply{Refused: true}
		}
		near = d.spacesNoticeLocked(dp, o, skey, t)
	default:
		dp.mu.Unlock()
		return distReply{Refused: true}
	}
	var backups []string
	if repl != nil && o.Partition < len(t.Replicas) {
		dp.seq++
		repl.Partition, repl.Seq, repl.Epoch = o.Partition, dp.seq, t.Epoch
		backups = t.Replicas[o.Partition][1:]
	}
	if repl != nil && repl.Kind == kindPut && len(backups) > 0 && dp.sendsDone() {
		// Queued for the backups' next batch (replbatch.go): no change
		// of the partition is still handing its messages over, so the
		// put takes its place in the partition's order by being queued.
		d.queuePut(repl, backups)
		backups = nil
	}
	switch {
	case repl == nil || repl.Kind == kindPut || dp.holders == nil:
	case repl.Kind == kindLock:
		// The key's near holders keep their copies through the lock: the
		// row does not change before the commit, and the unlock (or the
		// lock's sweep, if no unlock comes) takes them (keepCopies).
		d.keepCopiesLocked(dp, o, skey)
	default:
		if hs := dp.holders.take(skey); len(hs) > 0 {
			near = &nearNotice{dp: dp, holders: hs, seqs: make([]uint64, len(hs)),
				msg: distOp{Kind: kindInvalidate, Partition: o.Partition, Region: o.Region, Key: o.Key, Value: kept, Spaces: repl.Spaces, Upd: repl.Upd, Epoch: t.Epoch, Ticket: ticket{Owner: d.self}}}
			for i, h := range hs {
				near.seqs[i] = dp.holders.next(h)
				if kept != nil {
					// It keeps the row: still a holder, told of the next change.
					dp.addHolder(d, skey, h)
				}
			}
		}
	}
	// A change's query-space update goes from here to the members none of
	// its messages reach (spreadSpaces), alongside them.
	spread := rep.SpacesAt != nil && d.c.directSpaces()
	stored := o.Kind == kindPut && !rep.Refused || kept != nil // an entry grew the partition
	if len(backups) == 0 && near == nil && !spread {
		dp.mu.Unlock()
		if stored {
			d.evictOver()
		}
		return rep
	}
	// Take this change's place in the partition's send order before
	// unlocking, so that its messages leave after those of every change
	// numbered before it.
	prev, mine := dp.sent, make(chan struct{})
	dp.sent = mine
	dp.mu.Unlock()
	if stored {
		d.evictOver()
	}
	ctx, cancel := context.WithTimeout(ctx, d.c.cfg.SyncTimeout)
	defer cancel()
	sentAt := time.Now()
	sent := d.send(ctx, prev, mine, backups, repl, near)
	var others spreadSent
	if spread {
		others = d.spreadSpaces(ctx, from, o.Spaces, o.Upd, backups, near)
	}
	err := sent.replicated(ctx, backups)
	if o.Kind != kindPut && len(backups) > 0 {
		d.c.stats.OwnerWait[ownerWaitBackups].Add(time.Since(sentAt))
	}
	if err != nil && o.Kind != kindPut {
		// An invalidation a backup may not have: the write must not be
		// acknowledged, or a takeover could serve the old row.
		d.c.cfg.Logger.Warn("l2cache: replication to a backup failed", "partition", o.Partition, "err", err)
		if near != nil {
			// Sent already: the holders that confirmed dropped the key;
			// the others go back into the registry, so that the retry
			// tells them again (or excludes them).
			d.keepHolders(near, skey, sent.unconfirmed(ctx, near))
		}
		return distReply{NotOwner: true, Epoch: t.Epoch}
	}
	err = d.tellNear(ctx, near, skey, sent)
	if near != nil {
		d.c.stats.OwnerWait[ownerWaitHolders].Add(time.Since(sentAt))
	}
	if err != nil {
		// A near holder may still serve the old state: not acknowledged.
		d.c.cfg.Logger.Warn("l2cache: a near holder was neither told of a change nor excluded", "partition", o.Partition, "err", err)
		return distReply{Unavailable: true, Epoch: t.Epoch}
	}
	if rep.SpacesAt != nil {
		// Every backup applied the replication, and every holder dropped
		// the key or was excluded: each applied the carried update first,
		// or serves nothing before it has dropped everything.
		rep.SpacesAt = append(rep.SpacesAt, backups...)
		if near != nil {
			rep.SpacesAt = append(rep.SpacesAt, near.holders...)
		}
		rep.SpacesAt = append(rep.SpacesAt, others.applied(ctx)...)
	}
	return rep
}

// spreadSent is the query-space update a change's owner sent to the
// members none of the change's messages reach (spreadSpaces).
type spreadSent struct {
	to   []string
	sent []*rpc.Pending
}

// spreadSpaces sends a change's query-space update to every lease holder
// but the writer (from, which applied it before it asked), this owner,
// the change's backups and its near holders — each of which applies it
// with the change's message — without waiting. So a write's update
// reaches every member in the change's round trip, where the writer
// would send it to those the change did not reach only after the change
// was answered (distRegion.changeSpaces, syncSpaces): two hops less on
// every such write. The owner answers with the members that applied it
// (distReply.SpacesAt), and the writer sends it again to any other
// member, or excludes it, as before: a member this misses costs a
// message, never the promise.
func (d *dist) spreadSpaces(ctx context.Context, from string, spaces []string, id updateID, backups []string, near *nearNotice) spreadSent {
	covered := append([]string{from}, backups...)
	if near != nil {
		covered = append(covered, near.holders...)
	}
	to, sent, err := d.c.goSpaces(ctx, spaces, id, covered)
	if err != nil {
		return spreadSent{}
	}
	return spreadSent{to: to, sent: sent}
}

// applied waits for the answers and returns the members that applied
// the update.
func (s spreadSent) applied(ctx context.Context) []string {
	var out []string
	for i, p := range s.sent {
		if _, err := p.Wait(ctx); err == nil {
			out = append(out, s.to[i])
		}
	}
	return out
}

// maxGets bounds the gets of one rpcGets message.
const maxGets = 1024

// pendingGets is a batch of gets sent to one owner (goGets): the owner's
// answers, in order, once wait has them.
type pendingGets struct {
	n     int
	local []distReply  // the owner is this node: answered already
	p     *rpc.Pending // or the message to the owner
}

// goGets sends gets of keys the owner owns (in this node's table) in one
// message, or answers them here if this node is the owner.
func (d *dist) goGets(ctx context.Context, owner string, ops []distOp) *pendingGets {
	pg := &pendingGets{n: len(ops)}
	if owner == d.self {
		pg.local = make([]distReply, len(ops))
		for i, o := range ops {
			pg.local[i] = d.apply(ctx, d.self, o)
		}
		return pg
	}
	size := 5
	bodies := make([][]byte, len(ops))
	for i := range ops {
		bodies[i] = appendOp(make([]byte, 0, 64+len(ops[i].Region)+len(ops[i].Key)), &ops[i])
		size += len(bodies[i]) + 5
	}
	body := appendArrayHeader(make([]byte, 0, size), len(bodies))
	for _, b := range bodies {
		body = appendBin(body, b)
	}
	d.c.stats.RemoteCalls.Add(1)
	d.c.stats.RemoteByKind[remoteGet].Add(1)
	d.c.stats.RemoteBytes.Add(uint64(len(body)))
	pg.p = d.rpc.Go(ctx, owner, rpcGets, body)
	return pg
}

// wait returns the owner's answers, in the order of the gets, or nil if
// the batch was not answered (the caller reads each key again alone).
func (pg *pendingGets) wait(ctx context.Context) []distReply {
	if pg.local != nil {
		return pg.local
	}
	resp, err := pg.p.Wait(ctx)
	if err != nil {
		return nil
	}
	dec := decoder{b: resp}
	n := dec.array(maxGets)
	if dec.err != nil || n != pg.n {
		return nil
	}
	reps := make([]distReply, n)
	for i := range reps {
		b := dec.bin()
		if dec.err != nil {
			return nil
		}
		if reps[i], err = decodeReply(b); err != nil {
			return nil
		}
	}
	if dec.end() != nil {
		return nil
	}
	return reps
}

// handleGets serves an rpcGets message: each get as apply serves one (a
// get does not block), the answers in one message, in order.
func (d *dist) handleGets(ctx context.Context, from string, body []byte) ([]byte, error) {
	dec := decoder{b: body}
	n := dec.array(maxGets)
	ops := make([]distOp, 0, min(n, len(body)/8))
	for range n {
		o, err := decodeOp(dec.bin())
		if err == nil && o.Kind != kindGet {
			err = fmt.Errorf("%w: a %s message carrying operation kind %d", ErrCodec, rpcGets, o.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("unreadable cache operation: %w", err)
		}
		ops = append(ops, o)
	}
	if err := dec.end(); err != nil {
		return nil, fmt.Errorf("unreadable batch of gets: %w", err)
	}
	out := appendArrayHeader(make([]byte, 0, 64*len(ops)), len(ops))
	for _, o := range ops {
		rep := d.apply(ctx, from, o)
		out = appendBin(out, appendReply(make([]byte, 0, 32+len(rep.Value)+len(rep.Ticket.Owner)), &rep))
	}
	return out, nil
}

// acceptPutLocked stores a put-from-load unless its ticket is not this
// owner's, or not newer than the key's latest invalidation (and its
// spaces' latest update), or the key is soft-locked. Called with dp.mu
// held, by an owner that may answer.
func (dp *dpart) acceptPutLocked(d *dist, o distOp, skey string, now time.Time) bool {
	floor := max(dp.ticketFloorLocked(o.Region, skey), d.c.spacesStamp(o.Spaces))
	if o.Ticket.Owner != d.self || o.Ticket.Stamp <= floor || dp.lockedLocked(skey, now) {
		return false
	}
	e := d.newEntry(o.Value, o.Ticket.Stamp, now)
	e.query = o.queryResult()
	dp.setLocked(d, skey, e)
	return true
}

// queuePut queues an accepted put's replication, numbered, for the
// backups' next batch. Called with dp.mu held, when the partition's
// previous change has handed its messages over.
func (d *dist) queuePut(repl *distOp, backups []string) {
	body := appendOp(nil, repl)
	for _, b := range backups {
		d.batch(b).add(body)
	}
}

// putNote offers a loaded value to the owner that issued the miss's
// ticket without waiting for its answer (NEAR mode: the reader keeps its
// near copy on the strength of its registration at the miss, not of the
// put). The owner stores it or refuses it as apply would.
func (d *dist) putNote(partition int, region, key string, spaces []string, v []byte, t ticket) {
	o := distOp{Kind: kindPut, Partition: partition, Region: region, Key: key, Spaces: spaces, Value: v, Ticket: t}
	if t.Owner == d.self {
		d.applyPutNote(o)
		return
	}
	body := appendOp(make([]byte, 0, 64+len(region)+len(key)+len(v)), &o)
	d.c.stats.RemoteCalls.Add(1)
	d.c.stats.RemoteByKind[remotePut].Add(1)
	d.c.stats.RemoteBytes.Add(uint64(len(body)))
	if err := d.rpc.Notify(t.Owner, rpcPutNote, body); err != nil {
		d.c.cfg.Logger.Debug("l2cache: a put was not sent", "owner", t.Owner, "err", err)
	}
}

// handlePutNote serves a one-way put on the connection's reader goroutine.
func (d *dist) handlePutNote(from string, body []byte) {
	o, err := decodeOp(body)
	if err != nil || o.Kind != kindPut {
		d.c.cfg.Logger.Debug("l2cache: dropped an unreadable put", "from", from, "err", err)
		return
	}
	d.applyPutNote(o)
}

// applyPutNote is apply's put without an answer, and without blocking:
// the replication is queued for the backups' batch, or — while a change
// of the partition is still handing its messages over — not sent at all
// (nor numbered: the backups see no gap, and only lack the entry).
func (d *dist) applyPutNote(o distOp) {
	dp, t := d.part(o.Partition)
	dp.mu.Lock()
	now := d.c.cfg.Now()
	if !dp.owner || !d.c.valid() || now.Before(dp.servingFrom) {
		dp.mu.Unlock()
		return
	}
	if !dp.acceptPutLocked(d, o, o.Region+"\x00"+o.Key, now) {
		dp.mu.Unlock()
		if r := d.c.region(o.Region); r != nil {
			r.stats.RefusedPuts.Add(1)
		}
		return
	}
	if !o.queryResult() && o.Partition < len(t.Replicas) && len(t.Replicas[o.Partition]) > 1 && dp.sendsDone() {
		dp.seq++
		d.queuePut(&distOp{Kind: kindPut, Partition: o.Partition, Region: o.Region, Key: o.Key, Value: o.Value, Spaces: o.Spaces,
			Stamp: o.Ticket.Stamp, Seq: dp.seq, Epoch: t.Epoch}, t.Replicas[o.Partition][1:])
	}
	dp.mu.Unlock()
	d.evictOver()
}

// queryResult reports whether a put is of a query result: it names query
// spaces (an entity's or a collection's does not). Its entry is marked so
// (entry.query), and an owner does not copy it to the partition's
// backups: a backup that takes a partition over drops the query results
// it holds (dropQueries: they were judged against the old owner's
// query-space stamps), so a copy there would only cost a message, the
// backup's memory, and its evictions of entries it could use.
func (o distOp) queryResult() bool { return len(o.Spaces) > 0 }

// nearNotice is a change's message to the key's near holders, each
// numbered in the holder's own sequence (seqs).
type nearNotice struct {
	dp      *dpart
	holders []string
	seqs    []uint64
	msg     distOp
}

// changeSent is what send handed to the connections for one change:
// each backup's replication, and each near holder's notice (nil: this
// node's own copy, dropped in send; or a notice that rode the holder's
// replication, viaRepl).
type changeSent struct {
	repl    []*rpc.Pending
	replErr []error // by backup, once replicated has waited
	near    []*rpc.Pending
	// viaRepl is, by holder, the index of the backup whose replication
	// carried the holder's notice (the holder is that backup), or -1.
	viaRepl []int
}

// send hands a change's messages to the connections of its backups and
// near holders (the owner's own near copy is dropped here) once the
// messages of the partition's previous change have been handed over
// (prev), and then lets the next change's go (mine). The backups and the
// holders serve them in that order (HandleInline): a backup sees the
// partition's sequence without gaps, and a holder its change numbers. A
// backup that is also one of the key's near holders gets its notice in
// its replication (distOp.Near, numbered in Ticket.Stamp): one message
// instead of two, served in the same place in the connection's order.
func (d *dist) send(ctx context.Context, prev, mine chan struct{}, backups []string, repl *distOp, near *nearNotice) *changeSent {
	defer close(mine)
	if prev != nil {
		<-prev // bounded: the previous change only queues frames (or dials, within its deadline)
	}
	s := &changeSent{}
	if near != nil {
		s.viaRepl = make([]int, len(near.holders))
		for i := range s.viaRepl {
			s.viaRepl[i] = -1
		}
	}
	if len(backups) > 0 {
		var plain []byte
		for j, b := range backups {
			d.flushBatch(b) // the puts queued before this change leave first
			var body []byte
			if i := near.holderIndex(b); i >= 0 && b != d.self {
				withNear := *repl
				withNear.Near, withNear.Ticket = true, ticket{Owner: d.self, Stamp: near.seqs[i]}
				body = appendOp(nil, &withNear)
				s.viaRepl[i] = j
				d.c.stats.NearInRepl.Add(1)
			} else {
				if plain == nil {
					plain = appendOp(nil, repl)
				}
				body = plain
			}
			d.c.stats.RemoteCalls.Add(1)
			d.c.stats.RemoteByKind[remoteRepl].Add(1)
			d.c.stats.RemoteBytes.Add(uint64(len(body)))
			s.repl = append(s.repl, d.rpc.Go(ctx, b, rpcRepl, body))
		}
	}
	if near != nil {
		for i, h := range near.holders {
			if s.viaRepl[i] >= 0 {
				s.near = append(s.near, nil)
				continue
			}
			msg := near.msg
			msg.Seq = near.seqs[i]
			if f := d.onNear.Load(); h == d.self && f != nil {
				(*f)(d.self, msg)
				s.near = append(s.near, nil)
				continue
			}
			body := appendOp(nil, &msg)
			d.c.stats.RemoteCalls.Add(1)
			d.c.stats.RemoteByKind[remoteNear].Add(1)
			d.c.stats.RemoteBytes.Add(uint64(len(body)))
			s.near = append(s.near, d.rpc.Go(ctx, h, rpcNear, body))
		}
	}
	return s
}

// holderIndex is m's index among the notice's holders, or -1 (also for
// no notice).
func (n *nearNotice) holderIndex(m string) int {
	if n == nil {
		return -1
	}
	return slices.Index(n.holders, m)
}

// replicated waits until every backup has applied a change sent to it,
// within ctx, and keeps each backup's answer for unconfirmed.
func (s *changeSent) replicated(ctx context.Context, backups []string) error {
	var errs []error
	s.replErr = make([]error, len(s.repl))
	for i, p := range s.repl {
		if _, err := p.Wait(ctx); err != nil {
			s.replErr[i] = err
			errs = append(errs, fmt.Errorf("backup %s: %w", backups[i], err))
		}
	}
	return errors.Join(errs...)
}

// unconfirmed waits for the answers of a change's near holders and
// returns those that did not confirm they dropped the key. A holder whose
// notice rode its replication confirmed it if the replication was
// answered (replicated has waited for it): the backup drops the key
// before it applies the replication, and answers only after both.
func (s *changeSent) unconfirmed(ctx context.Context, n *nearNotice) []string {
	var out []string
	for i, p := range s.near {
		if j := s.viaRepl[i]; j >= 0 {
			if s.replErr == nil || s.replErr[j] != nil {
				out = append(out, n.holders[i])
			}
			continue
		}
		if p != nil {
			if _, err := p.Wait(ctx); err != nil {
				out = append(out, n.holders[i])
			}
		}
	}
	return out
}

// keepHolders puts members back among skey's near holders after a change
// that took them from the registry failed before they confirmed it: the
// change is not acknowledged, and its retry (or the key's next change)
// must tell them again or exclude them. Without this the retry would find
// no holder of skey and be acknowledged while they may still serve the
// old state, their leases intact.
func (d *dist) keepHolders(n *nearNotice, skey string, members []string) {
	if len(members) == 0 {
		return
	}
	n.dp.mu.Lock()
	for _, m := range members {
		n.dp.addHolder(d, skey, m)
	}
	n.dp.mu.Unlock()
}

// tellNear waits until every near holder sent a change (send) has dropped
// its copy. A holder that does not answer in time is excluded from
// serving (ReadLease.Exclude waits out its lease) and forgotten: it
// registers again when it next reads, after it reset. The change is
// acknowledged only then; if a holder could be neither told nor excluded,
// it stays in the registry for the retry.
func (d *dist) tellNear(ctx context.Context, n *nearNotice, skey string, sent *changeSent) error {
	if n == nil {
		return nil
	}
	unreached := sent.unconfirmed(ctx, n)
	if len(unreached) == 0 {
		return nil
	}
	if d.c.cfg.Lease == nil {
		d.keepHolders(n, skey, unreached)
		return &NotAckedError{Members: unreached}
	}
	d.c.stats.Exclusions.Add(uint64(len(unreached)))
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.c.cfg.SyncTimeout+2*d.c.cfg.Lease.Duration())
	defer cancel()
	if err := d.c.cfg.Lease.Exclude(ectx, unreached); err != nil {
		d.keepHolders(n, skey, unreached)
		return err
	}
	n.dp.mu.Lock()
	if n.dp.holders != nil {
		n.dp.holders.forget(unreached)
	}
	n.dp.mu.Unlock()
	return nil
}

// applyChange applies an invalidation or a lock with the owner's stamp.
func (dp *dpart) applyChange(d *dist, k ownerKind, skey string, stamp uint64, lockExpiry time.Time) {
	switch {
	case k == kindLock && d.unused.Load():
		// The mode is not read (dropLocks): the lock guards nothing, and
		// held it would outlast its unlock, which no longer comes here.
	case k == kindLock:
		l := dp.locks[skey]
		if l == nil {
			l = &softLock{}
			dp.locks[skey] = l
		}
		if l.count > 0 {
			l.concurrent = true
		}
		l.count++
		l.expires = lockExpiry
	case k == kindUnlock:
		if l := dp.locks[skey]; l != nil {
			if l.count--; l.count <= 0 {
				l.stopSweep()
				delete(dp.locks, skey)
			}
		}
	}
	dp.foldInvLocked(d, stamp)
	dp.inv[skey] = stamp
	dp.delLocked(d, skey)
}

// handleRepl applies a replicated change on a backup. A gap in the
// sequence taints the copy: it will not be trusted on takeover. A change
// marked Near also tells this node, one of the key's near holders, to
// drop its near copy (the owner's notice, numbered in Ticket.Stamp: see
// send); that is done first, whatever becomes of the replication, and
// the answer confirms both.
func (d *dist) handleRepl(_ context.Context, from string, body []byte) ([]byte, error) {
	o, err := decodeOp(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable replication: %w", err)
	}
	if o.Kind == kindGet || o.Kind > kindUnlock {
		return nil, fmt.Errorf("%w: replication of operation kind %d", ErrCodec, o.Kind)
	}
	if o.Near {
		if err := d.nearInRepl(from, o); err != nil {
			return nil, err
		}
	}
	if o.Kind != kindPut && len(o.Spaces) > 0 {
		d.c.markSpaces(o.Spaces, o.Upd) // a write's query-space update, carried (changeSpaces)
	}
	dp, t := d.part(o.Partition)
	dp.mu.Lock()
	err = d.applyRepl(dp, t, o)
	dp.mu.Unlock()
	if err == nil && o.Kind == kindPut {
		d.evictOver() // dropping a backup entry only makes a takeover miss
	}
	return nil, err
}

// nearInRepl applies the near notice a replication carries. A node that
// never ran NEAR mode has no near copies (only its NEAR backend sends the
// reads that register a holder), and nothing to drop.
func (d *dist) nearInRepl(from string, o distOp) error {
	if o.Kind == kindPut || from == "" || o.Partition < 0 || o.Partition >= d.keeper.cfg.Partitions {
		return fmt.Errorf("%w: a near notice on a replication of kind %d", ErrCodec, o.Kind)
	}
	f := d.onNear.Load()
	if f == nil {
		return nil
	}
	var kept []byte
	if o.Kind == kindUnlock {
		kept = o.Value
	}
	(*f)(from, distOp{Kind: kindInvalidate, Partition: o.Partition, Region: o.Region, Key: o.Key, Value: kept, Seq: o.Ticket.Stamp,
		Epoch: o.Epoch, Ticket: ticket{Owner: from}})
	return nil
}

func (d *dist) applyRepl(dp *dpart, t *PartitionTable, o distOp) error {
	if !dp.backup || o.Epoch != t.Epoch {
		return fmt.Errorf("%s is not a backup of partition %d at epoch %d", d.self, o.Partition, o.Epoch)
	}
	if dp.seq != 0 && o.Seq != dp.seq+1 {
		dp.tainted = true
	}
	dp.seq = o.Seq
	skey := o.Region + "\x00" + o.Key
	if o.Kind == kindPut {
		e := d.newEntry(o.Value, o.Stamp, d.c.cfg.Now())
		e.query = o.queryResult()
		dp.setLocked(d, skey, e)
	} else {
		dp.applyChange(d, o.Kind, skey, o.Stamp, d.c.cfg.Now().Add(d.c.cfg.LockTimeout))
		if o.Kind == kindUnlock && len(o.Value) > 0 {
			dp.keepRowLocked(d, skey, o.Value, o.Stamp, d.c.cfg.Now()) // as the owner kept it
		}
	}
	return nil
}

// clearRegion drops a region ("" for all) from every partition this node
// owns (stamping the clear on its clock) or backs up (dropping entries).
func (d *dist) clearRegion(region string) {
	for _, dp := range d.allParts() {
		dp.mu.Lock()
		if region == "" {
			dp.floor = d.c.tick()
			dp.dropAllLocked(d)
		} else {
			if dp.owner {
				dp.cleared[region] = d.c.tick()
			}
			for k := range dp.entries {
				if len(k) > len(region) && k[:len(region)] == region && k[len(region)] == 0 {
					dp.delLocked(d, k)
				}
			}
		}
		dp.mu.Unlock()
	}
}

// allParts returns the partitions this node holds state for, as owner
// or backup; each is then locked on its own.
func (d *dist) allParts() []*dpart {
	d.mu.Lock()
	defer d.mu.Unlock()
	parts := make([]*dpart, 0, len(d.parts))
	for _, dp := range d.parts {
		parts = append(parts, dp)
	}
	return parts
}

// get asks the owner for key: a hit, or a miss with a ticket for the put.
func (d *dist) get(ctx context.Context, region, key string, spaces []string) (distReply, error) {
	rep, _, err := d.call(ctx, distOp{Kind: kindGet, Partition: d.partition(region, key), Region: region, Key: key, Spaces: spaces})
	return rep, err
}

// put offers a loaded value to the owner with the miss's ticket.
func (d *dist) put(ctx context.Context, region, key string, spaces []string, v []byte, t ticket) (bool, error) {
	rep, _, err := d.call(ctx, distOp{Kind: kindPut, Partition: d.partition(region, key), Region: region, Key: key, Spaces: spaces, Value: v, Ticket: t})
	return err == nil && !rep.Refused && !rep.Unavailable, err
}

func (d *dist) partition(region, key string) int {
	n := len(d.keeper.Table().Replicas)
	if n == 0 {
		n = d.keeper.cfg.Partitions
	}
	return PartitionOf(region, key, n)
}

// The backend seam (region.go).

func (d *dist) region(r *Region) regionBackend { return &distRegion{Region: r, d: d} }

// deliverUnknown: a region clear reaches the partitions this node holds
// even if it has not created the region.
func (d *dist) deliverUnknown(m message) {
	if m.Op == opClear {
		d.clearRegion(m.Region)
	}
}

// syncBus: in DISTRIBUTED mode only query-space updates and region clears
// travel on the bus, and owners answer reads by them, so they always wait
// for every node.
func (d *dist) syncBus() bool { return true }

func (d *dist) reset() { d.clearRegion("") }

// dropLocks forgets every soft lock this node holds, as owner or backup,
// and stops their sweeps: DISTRIBUTED and NEAR mode are no longer used
// (lockDropper). Until the mode is used again (used), locks that arrive
// are not held either: a writer that took its lock under a view that
// still wrote here unlocks under one that does not.
func (d *dist) dropLocks() {
	d.unused.Store(true)
	for _, dp := range d.allParts() {
		dp.mu.Lock()
		for _, l := range dp.locks {
			l.stopSweep()
		}
		clear(dp.locks)
		dp.mu.Unlock()
	}
}

// used marks the mode as read again, before any view that reads it is
// adopted: soft locks are held again.
func (d *dist) used() { d.unused.Store(false) }

func (d *dist) ready() error {
	t := d.keeper.Table()
	if !t.Has(d.self) {
		return errors.New("l2cache: no partition table including this node yet")
	}
	if _, at, ok := d.keeper.AdoptedAt(t.Epoch); ok && d.c.cfg.Now().Before(at.Add(d.leaseDuration())) {
		return errors.New("l2cache: the partition table is new: owners wait out the previous owners' leases")
	}
	return nil
}

func (d *dist) close() {
	d.sweepMu.Lock()
	d.closed = true
	d.sweepMu.Unlock()
	d.stopSweeps()
	d.sweeps.Wait()
	d.closeBatches()
}

// distRegion is a region in DISTRIBUTED mode: its entries live at their
// partitions' owners; this node only merges its own loads.
type distRegion struct {
	*Region
	d     *dist
	loads loads
}

// get asks the owner: a hit, or a miss with the owner's ticket, and the
// load's result is offered to the owner with it. Loads of one key on this
// node are merged only with a load whose ticket is newer than the key's
// latest invalidation at the owner. If the owner cannot be reached in
// SyncTimeout, or cannot answer yet, the value is loaded and returned
// without caching: the cache is an optimisation, not a dependency.
func (r *distRegion) get(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	gctx, cancel := context.WithTimeout(ctx, r.c.cfg.SyncTimeout)
	rep, err := r.d.get(gctx, r.name, key, spaces)
	cancel()
	if err != nil || rep.Unavailable {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.c.stats.OwnerMisses[readThrough(err)].Add(1)
		r.stats.Misses.Add(1)
		r.stats.Loads.Add(1)
		return load(ctx)
	}
	if rep.Hit {
		r.stats.Hits.Add(1)
		return rep.Value, nil
	}
	r.stats.Misses.Add(1)
	if rep.Refused {
		// Soft-locked at the owner: the put would be refused.
		r.stats.Loads.Add(1)
		return load(ctx)
	}
	own := &loadCall{ticket: rep.Ticket, done: make(chan struct{})}
	call, mine := r.loads.start(key, func(c *loadCall) bool {
		return c.ticket.Owner == rep.Ticket.Owner && c.ticket.Stamp > rep.Floor
	}, own)
	if !mine {
		return r.join(ctx, call)
	}
	r.stats.Loads.Add(1)
	own.value, own.err = load(ctx)
	if own.err == nil {
		pctx, cancel := context.WithTimeout(ctx, r.c.cfg.SyncTimeout)
		if ok, _ := r.d.put(pctx, r.name, key, spaces, own.value, rep.Ticket); ok {
			r.stats.Puts.Add(1)
		} else {
			r.stats.RefusedPuts.Add(1)
		}
		cancel()
	}
	return r.loads.finish(key, own)
}

// change applies an invalidation or a soft lock at the key's owner (and
// its backups), retrying across ownership changes until ctx ends (10 s if
// ctx has no deadline). An error means the write may still be cached.
func (r *distRegion) change(ctx context.Context, o op, key string, row []byte) error {
	_, err := r.changeSpaces(ctx, o, key, nil, updateID{}, row)
	return err
}

// changeSpaces is change, carrying a query-space update in the change's
// messages (spacesCarrier): the owner applies it, and so does each backup
// its replication reaches and each near holder its notice reaches, before
// answering, and the owner sends it to every other lease holder alongside
// (spreadSpaces); the owner answers with the members that applied it
// (distReply.SpacesAt). The caller sends the update to any other member
// itself.
func (r *distRegion) changeSpaces(ctx context.Context, o op, key string, spaces []string, id updateID, row []byte) ([]string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	r.stats.Invalidations.Add(1)
	rep, _, err := r.d.call(ctx, distOp{Kind: changeKind(o), Partition: r.d.partition(r.name, key), Region: r.name, Key: key, Value: row, Spaces: spaces, Upd: id})
	if err != nil {
		return nil, err
	}
	return rep.SpacesAt, nil
}

func (r *distRegion) clear(ctx context.Context, id updateID) error {
	r.drop()
	return r.c.publish(ctx, message{Op: opClear, Region: r.name, Upd: id})
}

func (r *distRegion) deliver(m message) {
	if m.Op == opClear {
		r.drop()
	}
	// Keys are invalidated at their owners, not over the bus.
}

func (r *distRegion) drop() { r.d.clearRegion(r.name) }
