package l2cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster/cp"
)

// NEAR mode: DISTRIBUTED, plus a near copy on every node of what it read.
//
// Entries are owned, backed up and invalidated at their partitions' owners
// exactly as in DISTRIBUTED mode; a node also keeps, in its own ristretto,
// the values its reads brought back, and serves them without asking the
// owner. What keeps a near copy honest:
//
//   - A read that may keep a near copy says so (distOp.Near); the owner
//     registers the reader as a holder of the key under the partition's
//     lock, before it answers — a hit, or a miss after which the reader
//     loads the value, keeps it and offers it to the owner without
//     waiting for an answer (a one-way put). A read of a soft-locked key
//     is neither registered nor kept (nor put): the owner answers a miss
//     marked Refused, and the reader only loads. The key's next change
//     (invalidation, unlock) is sent to
//     every holder of the key (nearHolders), numbered in each holder's
//     own sequence for the partition, and the change is acknowledged only
//     when each holder has dropped the key — or, for a holder that does
//     not answer, when it has been excluded and its read lease has run out
//     (ReadLease.Exclude), after which it drops everything before it
//     serves again. The change takes the key's holders: a holder that
//     keeps a copy later has read or put it again, and registered again.
//     A soft lock is not such a change: the holders keep serving their
//     copies of the row, which the writer has not committed yet, and the
//     unlock tells them — or, if the writer never unlocks, the lock's
//     sweep does before the lock can expire (keepCopiesLocked).
//     A change that fails (a backup did not apply it, or a holder could
//     be neither told nor excluded) is not acknowledged, and the holders
//     that did not confirm it go back into the registry: its retry tells
//     them again, and is acknowledged only when they dropped the key or
//     were excluded.
//   - The stale-put race, near: a near copy carries a stamp of the holder's
//     clock taken before the read was sent. A change message stamps the
//     key on arrival; a copy stamped at or below the key's (or its
//     region's, or its partition's) latest stamp is never kept or served.
//     So a change that the owner applied after registering the reader
//     either arrives before the copy is kept (refused) or after (the copy
//     is dropped and, should ristretto keep it, never served).
//   - A copy is tied to its partition's owner: when this node's table
//     gives the partition another owner, or the same owner after a gap in
//     the tables this node adopted, every copy of the partition is
//     dropped. A new owner answers nothing until a lease after it adopted
//     its table, and a holder whose lease is valid has adopted a table at
//     least as new as its last renewal: by the time a new owner accepts a
//     change it does not send to this node, this node no longer serves
//     copies from the old owner.
//   - A gap in a partition's change numbers drops the partition's copies;
//     a read lease that is regained after this node was excluded drops
//     them all; without a valid lease no copy is served.
//   - Query results are kept near as LOCAL mode with synchronous
//     invalidation keeps them, and shared through their owners as
//     DISTRIBUTED shares them (getQuery). What keeps a kept result honest
//     needs no owner: every query-space update, region clear and change
//     of a query key (nearRegion.change) reaches every node before it is
//     acknowledged (a member that does not answer is excluded and waited
//     out) — region clears and query keys' changes over the bus, a
//     query-space update straight to every lease holder (syncSpaces) or,
//     when it comes with a write's change of an entity, in that change's
//     messages to the key's owner, backups and near holders and straight
//     to the rest (changeSpaces) — and stamps the spaces, region or key on
//     arrival; a result stamped before its read began is kept and served
//     only while it is above those stamps, so a write acknowledged after
//     the read began either stamps before the result is kept (refused)
//     or after (never served) — the package doc's stale-put argument, on
//     this node's clock.
//   - A miss asks the query's owner, and keeps the owner's result only if
//     the owner has applied every update of the query's spaces (and
//     region clear) this node applied before the read: an entity's change
//     reaches a holder only after its owner applied it, but a query-space
//     update reaches the members in no order — the writer stamps its own
//     spaces and sends to the rest at once, or the written key's owner
//     spreads it — so a node may apply an update before the query's owner
//     does, read, and be answered the owner's result from before the
//     update: allowed once (DISTRIBUTED serves it; the write is not
//     acknowledged yet), but a copy of it, stamped here after the update,
//     would be served after the write is acknowledged
//     (TestQueryAfterSpacesUpdateOutOfOrder). So every update is named,
//     and the read names the updates this node applied that may not have
//     reached the owner: those above their writers' watermarks (an update
//     resolves when its write returns; updates.go). The owner answers
//     whether it applied them all (distReply.Vouched), before it reads its
//     floor; if not, the answer is served once and not kept. A miss at
//     the owner is loaded here, kept, and offered to the owner (a put
//     with the owner's ticket), for the other nodes' misses. An update
//     from a node that does not name them stops the sharing of its spaces
//     in this process (spaceUpdates.unnamed).
//   - A query result over a keyed space ({name}: keyed.go) is the
//     exception: its updates are routed to the space's owner and from
//     there to the members registered under the space, not sent to every
//     member, so its copy is kept as an entity's is — registered at the
//     owner before the answer (distOp.Near), tied to the partition's
//     owner, dropped with the partition's copies — and judged besides
//     against this node's stamps of its spaces, as any result is.
//   - GetQuery of an entity or collection region reads through its owner
//     every time, as in DISTRIBUTED: no value read with query spaces is
//     kept from an owner's answer (keep).
type near struct {
	*dist
	// store holds the near copies of every region, keyed by a hash of the
	// key with the region's seed (nearRegion.hash), as LOCAL's store: a
	// read builds no key string.
	store *ristretto.Cache[uint64, *nearEntry]
	parts []nearPart // by partition
	// floor: no near copy stamped at or below is served (reset). Read on
	// every near hit, so an atomic rather than a field under mu.
	floor atomic.Uint64

	mu      sync.Mutex
	regions map[string]*nearRegion
	// gens are the members' lease generations as of the last renewal
	// (nil before the first): a member whose generation changed is a new
	// process, with no registry of the holders the old one knew.
	gens map[string]uint64
}

// testBeforeKeep, set by tests only, runs before a near copy is kept.
var testBeforeKeep func(key string)

// nearEntry is a near copy. The store knows it by a 64-bit hash only, so
// it keeps its region and key: a read checks them, and another key whose
// hash collides is a miss, as if its copy had been evicted.
type nearEntry struct {
	value  []byte
	stamp  uint64   // this node's clock, before the read that brought it
	spaces []string // a query result's spaces
	region *nearRegion
	key    string
}

// nearPart is what a holder knows of one partition.
type nearPart struct {
	mu      sync.Mutex
	epoch   uint64 // the table epoch owner and since were computed for
	owner   string
	since   uint64 // the first epoch of the owner's run, as adopted here
	dropped uint64 // no copy of the partition stamped at or below is served
	seq     uint64 // the owner's last change message number
	seqFrom string
	// A read's fast path (near.partFloor): at is the epoch that owner,
	// since and dropped were computed for, and floor is dropped; both are
	// written under mu, floor first, so a read that finds at equal to its
	// table's epoch reads a floor at least as new as that epoch's.
	at, floor atomic.Uint64
}

// drop raises the partition's floor to stamp. Called with mu held.
func (np *nearPart) drop(stamp uint64) {
	np.dropped = stamp
	np.floor.Store(stamp)
}

func newNear(c *Cache, d *dist) (*near, error) {
	store, err := ristretto.NewCache(&ristretto.Config[uint64, *nearEntry]{
		NumCounters:        max(c.cfg.MaxCost/100, 1000),
		MaxCost:            c.cfg.MaxCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("l2cache: %w", err)
	}
	n := &near{dist: d, store: store, regions: map[string]*nearRegion{},
		parts: make([]nearPart, c.cfg.Keeper.cfg.Partitions)}
	onChange := n.onChange
	n.dist.onNear.Store(&onChange)
	if c.cfg.Lease != nil {
		c.cfg.Lease.Observe(n.observeGens)
	}
	n.rpc.HandleInline(rpcNear, n.handleChange) // in the owner's order; it does not block
	return n, nil
}

func (n *near) region(r *Region) regionBackend {
	nr := &nearRegion{distRegion: distRegion{Region: r, d: n.dist}, n: n, seed: maphash.MakeSeed(), inv: map[string]uint64{}}
	n.mu.Lock()
	n.regions[r.name] = nr
	n.mu.Unlock()
	return nr
}

func (n *near) reset() {
	n.dist.reset()
	n.c.stats.NearDrops[nearDropReset].Add(1)
	n.floor.Store(n.c.tick())
}

func (n *near) close() { n.store.Close() }

// observeGens drops the near copies of the partitions a member owns when
// its lease generation changed since the last renewal (and every copy at
// the first renewal this backend sees): an owner whose process restarted
// before the cluster declared it failed keeps its name and partitions,
// but not its registry of holders, so it would not tell this node of
// later changes. The new process answers nothing before a lease has
// passed since its activation, so a holder whose lease is valid when
// such a change is acknowledged has renewed after the activation, seen
// the new generation, and dropped its copies. Copies from other owners
// stay: their owners' registries are intact. A partition this node last
// saw owned by another member keeps its copies too — if the restarted
// member owns it in a newer table, the first look under that table
// (part) sees the owner change and drops them.
func (n *near) observeGens(kvs []cp.KV) {
	gens := map[string]uint64{}
	for _, kv := range kvs {
		name, ok := strings.CutPrefix(kv.Key, MembersPrefix)
		if !ok {
			continue
		}
		var rec memberRecord
		if msgpack.Unmarshal(kv.Value, &rec) == nil {
			gens[name] = rec.Gen
		}
	}
	n.mu.Lock()
	first := n.gens == nil
	var restarted []string
	for name, g := range gens {
		if old, ok := n.gens[name]; ok && old != g {
			restarted = append(restarted, name)
		}
	}
	n.gens = gens
	n.mu.Unlock()
	switch {
	case first:
		n.c.stats.NearDrops[nearDropGens].Add(1)
		n.dropCopies()
	case len(restarted) > 0:
		n.c.stats.NearDrops[nearDropGens].Add(1)
		n.dropOwnedBy(restarted)
	}
}

// dropOwnedBy drops the near copies of every partition whose owner, as
// this node last looked, is one of members.
func (n *near) dropOwnedBy(members []string) {
	for p := range n.parts {
		np := &n.parts[p]
		np.mu.Lock()
		if slices.Contains(members, np.owner) {
			np.drop(n.c.tick())
		}
		np.mu.Unlock()
	}
}

// dropCopies forgets every near copy, leaving the partitions this node
// owns or backs up alone (they are DISTRIBUTED's).
func (n *near) dropCopies() {
	n.floor.Store(n.c.tick())
	n.store.Clear()
}

// handleChange serves an owner's change message. It does not block.
func (n *near) handleChange(_ context.Context, from string, body []byte) ([]byte, error) {
	o, err := decodeOp(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable near invalidation: %w", err)
	}
	if o.Kind != kindInvalidate || o.Partition < 0 || o.Partition >= len(n.parts) {
		return nil, fmt.Errorf("%w: near invalidation of kind %d, partition %d", ErrCodec, o.Kind, o.Partition)
	}
	n.onChange(from, o)
	return nil, nil
}

// onChange drops a key's near copy on the owner's word, and the whole
// partition's if a message from that owner is missing.
func (n *near) onChange(from string, o distOp) {
	n.c.stats.InvalidationsReceived.Add(1)
	np := &n.parts[o.Partition]
	np.mu.Lock()
	if np.seqFrom == from && np.seq != 0 && o.Seq != np.seq+1 {
		n.c.stats.NearDrops[nearDropGap].Add(1)
		np.drop(n.c.tick())
	}
	np.seq, np.seqFrom = o.Seq, from
	np.mu.Unlock()
	if len(o.Spaces) > 0 && from != n.self {
		n.c.markSpaces(o.Spaces, o.Upd) // a write's query-space update, carried (changeSpaces)
	}
	n.mu.Lock()
	nr := n.regions[o.Region]
	n.mu.Unlock()
	if nr != nil {
		nr.dropKey(o.Key)
		if len(o.Value) > 0 {
			// An unlock that left its writer's row at the owner: kept
			// here in place of the copy, stamped after the drop.
			nr.keep(o.Partition, o.Key, from, o.Value, n.c.tick(), nil)
		}
	}
}

// part returns the floor of partition p's near copies under the current
// table, and its owner: copies from before the partition's owner changed
// (or from before a gap in the tables adopted here) are below the floor.
func (n *near) part(p int) (floor uint64, owner string) {
	t := n.keeper.Table()
	np := &n.parts[p]
	np.mu.Lock()
	defer np.mu.Unlock()
	if np.epoch != t.Epoch {
		owner, since := t.Owner(p), n.keeper.OwnerSince(p, t.Epoch)
		if owner != np.owner || since != np.since {
			if np.epoch != 0 {
				n.c.stats.NearDrops[nearDropOwner].Add(1)
			}
			np.drop(n.c.tick())
		}
		np.epoch, np.owner, np.since = t.Epoch, owner, since
		np.at.Store(t.Epoch)
	}
	return np.dropped, np.owner
}

// partFloor is part's floor without its lock when the partition was
// last looked at under the current table (a read's common case): any
// drop made since is in floor, which is stored before at and on every
// drop.
func (n *near) partFloor(p int) uint64 {
	np := &n.parts[p]
	if at := np.at.Load(); at != 0 && at == n.keeper.Table().Epoch {
		return np.floor.Load()
	}
	floor, _ := n.part(p)
	return floor
}

// nearRegion is a region in NEAR mode: DISTRIBUTED's, with near copies.
type nearRegion struct {
	distRegion
	n    *near
	seed maphash.Seed // of the keys' hashes in the store: each region its own

	mu      sync.Mutex
	inv     map[string]uint64 // key → stamp of its latest change message
	cleared uint64            // stamp of the last region-wide drop
}

// hash is key's key in the store. Each region hashes with its own seed,
// so two regions' keys collide no more often than two keys of one.
func (r *nearRegion) hash(key string) uint64 { return maphash.String(r.seed, key) }

// found returns the store's entry for key, if it is key's.
func (r *nearRegion) found(key string) (*nearEntry, bool) {
	e, ok := r.n.store.Get(r.hash(key))
	if !ok || e.region != r || e.key != key {
		return nil, false
	}
	return e, true
}

func (r *nearRegion) get(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	if !r.c.valid() {
		r.c.stats.NearMisses[nearMissLease].Add(1)
		if r.kind == QueryRegion {
			r.stats.Misses.Add(1)
			r.stats.Loads.Add(1)
			return load(ctx)
		}
		return r.distRegion.get(ctx, key, spaces, load)
	}
	if r.kind == QueryRegion {
		return r.getQuery(ctx, key, spaces, load)
	}
	p := r.d.partition(r.name, key)
	if v, ok := r.lookup(p, key, true); ok {
		r.stats.NearHits.Add(1)
		return v, nil
	}
	// The partition's owner as of now, before the stamp: a first look at
	// the partition (or at a new table) that finds it moved drops its
	// copies with a stamp the read's is above, not one that refuses the
	// copy this read brings back.
	r.n.part(p)
	stamp := r.c.tick() // before the read: a change after it drops the copy
	gctx, cancel := context.WithTimeout(ctx, r.c.cfg.SyncTimeout)
	rep, owner, err := r.d.call(gctx, distOp{Kind: kindGet, Near: true, Partition: p, Region: r.name, Key: key, Spaces: spaces})
	cancel()
	return r.answered(ctx, p, key, spaces, load, stamp, rep, owner, err)
}

// answered finishes a get of key that missed its near copy, from the
// owner's answer (rep, or err) to the read sent after stamp was taken:
// keeps what the owner had, or loads, keeps and offers the load to the
// owner, or reads through when the owner could not answer.
func (r *nearRegion) answered(ctx context.Context, p int, key string, spaces []string, load Loader, stamp uint64, rep distReply, owner string, err error) ([]byte, error) {
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
		r.keep(p, key, owner, rep.Value, stamp, spaces)
		return rep.Value, nil
	}
	r.stats.Misses.Add(1)
	if rep.Refused {
		// Soft-locked at the owner, which did not register this node: the
		// load is neither kept (the unlock would drop it) nor put (it
		// would be refused).
		r.c.stats.NearDrops[nearKeepLocked].Add(1)
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
		// Kept without waiting for the put: the owner registered this
		// node as a holder of the key before it answered the miss, so a
		// change after that — which the load may predate — reaches this
		// node and drops the copy, or stamps the key before the copy is
		// kept and the copy is refused. The put only fills the owner
		// (which counts it if it refuses it).
		r.keep(p, key, owner, own.value, stamp, spaces)
		r.d.putNote(p, r.name, key, spaces, own.value, rep.Ticket)
		r.stats.Puts.Add(1)
	}
	return r.loads.finish(key, own)
}

// getMany is get of several keys of an entity or collection region (not
// a query region), their near misses asked of their owners in one
// message per owner, sent together: a page of a list whose rows this
// node has not read yet costs a round trip per owner, not one per row.
// Each key's read is get's — registered at the owner under the
// partition's lock, answered, kept or loaded by the same rules
// (answered), its stamp taken before its read was sent — and a key whose
// owner could not answer in the batch (not the owner any more, not
// reached) is read again on its own by get, which retries. load(ctx, i)
// loads keys[i].
func (r *nearRegion) getMany(ctx context.Context, keys []string, load func(ctx context.Context, i int) ([]byte, error)) ([][]byte, []error) {
	vals, errs := make([][]byte, len(keys)), make([]error, len(keys))
	loader := func(i int) Loader { return func(ctx context.Context) ([]byte, error) { return load(ctx, i) } }
	if r.kind == QueryRegion || !r.c.valid() {
		for i, k := range keys {
			vals[i], errs[i] = r.get(ctx, k, nil, loader(i))
		}
		return vals, errs
	}
	t := r.d.keeper.Table()
	parts := make([]int, len(keys))
	byOwner := map[string][]int{}
	var owners []string
	for i, k := range keys {
		p := r.d.partition(r.name, k)
		parts[i] = p
		if v, ok := r.lookup(p, k, true); ok {
			r.stats.NearHits.Add(1)
			vals[i] = v
			continue
		}
		r.n.part(p) // as get: before the stamp
		owner := t.Owner(p)
		if owner == "" {
			owner = "\x00" // no table yet: get waits for one
		}
		if byOwner[owner] == nil {
			owners = append(owners, owner)
		}
		byOwner[owner] = append(byOwner[owner], i)
	}
	if len(owners) == 0 {
		return vals, errs
	}
	stamp := r.c.tick() // before the reads: a change after them drops their copies
	gctx, cancel := context.WithTimeout(ctx, r.c.cfg.SyncTimeout)
	defer cancel()
	type batch struct {
		owner string
		idx   []int
		sent  *pendingGets
	}
	batches := make([]batch, 0, len(owners))
	for _, owner := range owners {
		idx := byOwner[owner]
		b := batch{owner: owner, idx: idx}
		if len(idx) > 1 && owner != "\x00" {
			ops := make([]distOp, len(idx))
			for j, i := range idx {
				ops[j] = distOp{Kind: kindGet, Near: true, Partition: parts[i], Region: r.name, Key: keys[i]}
			}
			b.sent = r.d.goGets(gctx, owner, ops)
		}
		batches = append(batches, b)
	}
	for _, b := range batches {
		var reps []distReply
		if b.sent != nil {
			reps = b.sent.wait(gctx)
		}
		for j, i := range b.idx {
			if reps == nil || reps[j].NotOwner {
				// Alone, or not answered in the batch: get's own path,
				// with its retries.
				vals[i], errs[i] = r.get(ctx, keys[i], nil, loader(i))
				continue
			}
			vals[i], errs[i] = r.answered(ctx, parts[i], keys[i], nil, loader(i), stamp, reps[j], b.owner, nil)
		}
	}
	return vals, errs
}

// getQuery answers a get of a query result from this node's own copy, or
// loads it and keeps it (the near type's doc says why no owner is asked).
func (r *nearRegion) getQuery(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	p := r.d.partition(r.name, key)
	_, keyed := keyedOf(spaces)
	if v, ok := r.lookupOwn(p, key, spaces, keyed); ok {
		r.stats.NearHits.Add(1)
		return v, nil
	}
	floor := max(r.c.spacesStamp(spaces), r.ownFloor(key))
	if keyed {
		// A copy of the partition's owner (keyed.go): as get, the first
		// look at a moved partition drops its copies before the stamp.
		partFloor, _ := r.n.part(p)
		floor = max(floor, partFloor)
	}
	// Join a get in flight only if it began after the last change this
	// get could know of (LOCAL's rule): what it brings back, from the
	// owner or the database, is then at least as new as this get needs.
	// Not a keyed result's: this node's stamps of a keyed space show only
	// the updates it was registered for (keyed.go), and a get in flight
	// that did not register (its owner could not answer, so it reads the
	// database) is told of none — an update acknowledged after its load
	// began would not rule it out (TestRandomizedKeyedQueriesAgainstSQLite
	// found it).
	own := &loadCall{stamp: r.c.tick(), done: make(chan struct{})} // before the owner's read and the load
	call, mine := r.loads.start(key, func(c *loadCall) bool { return !keyed && c.stamp > floor }, own)
	if !mine {
		v, err := r.join(ctx, call)
		select {
		case <-call.done:
			if call.hit {
				r.stats.Hits.Add(1) // answered by the owner, as if asked
				return v, err
			}
		default:
		}
		r.stats.Misses.Add(1)
		return v, err
	}
	// After the stamp: an update applied here after it refuses the copy
	// (keepOwn) whether it is named or not.
	need, shared := r.c.updatesNeeded(r.name, spaces)
	var rep distReply
	var owner string
	var err error
	// A result over a keyed space is asked of its owner even when no
	// answer may be kept (shared false): the read registers this node,
	// without which nothing it loads may be kept (keyed.go).
	if shared || keyed {
		gctx, cancel := context.WithTimeout(ctx, r.c.cfg.SyncTimeout)
		rep, owner, err = r.d.call(gctx, distOp{Kind: kindGet, Near: keyed, Partition: p, Region: r.name, Key: key, Spaces: spaces, Want: shared, Need: need})
		cancel()
		if err != nil && ctx.Err() != nil {
			own.err = ctx.Err()
			return r.loads.finish(key, own)
		}
		if err == nil && !rep.Unavailable && rep.Hit {
			r.stats.Hits.Add(1)
			if rep.Vouched {
				r.keepResult(p, key, owner, keyed, rep.Value, own.stamp, spaces)
			} else {
				// The owner has not applied an update of the spaces this
				// node has (or does not say: an older build): served
				// once, as DISTRIBUTED serves it, and not kept.
				r.c.stats.NearDrops[nearKeepLacks].Add(1)
			}
			own.value, own.hit = rep.Value, true
			return r.loads.finish(key, own)
		}
	}
	r.stats.Misses.Add(1)
	r.stats.Loads.Add(1)
	own.value, own.err = load(ctx)
	asked := (shared || keyed) && err == nil && !rep.Unavailable && !rep.Refused
	if own.err == nil {
		if !keyed || asked {
			// Kept: a keyed result only if the owner registered this
			// node (it answered, and the key was not soft-locked).
			r.keepResult(p, key, owner, keyed, own.value, own.stamp, spaces)
		}
		if asked {
			// Offered to the owner, for the other nodes' misses: it
			// keeps it only if no update of the key or its spaces
			// reached it since it issued the ticket.
			r.d.putNote(p, r.name, key, spaces, own.value, rep.Ticket)
			r.stats.Puts.Add(1)
		}
	}
	return r.loads.finish(key, own)
}

// ownFloor is the stamp at or below which no query result of key is
// served: the node's, the region's and the key's latest drops.
func (r *nearRegion) ownFloor(key string) uint64 {
	floor := r.n.floor.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(floor, r.inv[key], r.cleared)
}

// countColdMiss counts a miss of a key with no near copy: cold, or
// dropped by an invalidation of the key.
func (r *nearRegion) countColdMiss(key string) {
	cause := nearMissCold
	r.mu.Lock()
	if r.inv[key] != 0 {
		cause = nearMissKey
	}
	r.mu.Unlock()
	r.c.stats.NearMisses[cause].Add(1)
}

// lookupOwn returns this node's query result for key, if still valid.
// The caller has seen the read lease valid before it called (get): the
// floors read after that include any reset that regained the lease (the
// lease runs the reset before it is valid again), so one check, before,
// is enough.
func (r *nearRegion) lookupOwn(p int, key string, spaces []string, keyed bool) ([]byte, bool) {
	e, ok := r.found(key)
	if !ok {
		r.countColdMiss(key)
		return nil, false
	}
	floor := r.ownFloor(key)
	if keyed {
		// A copy of the partition's owner (keyed.go): dropped with the
		// partition's copies.
		if pf := r.n.partFloor(p); e.stamp <= pf && e.stamp > floor {
			r.c.stats.NearMisses[nearMissPartition].Add(1)
			r.n.store.Del(r.hash(key))
			return nil, false
		}
	}
	sp := r.c.spacesStamp(e.spaces)
	if !slices.Equal(spaces, e.spaces) {
		sp = max(sp, r.c.spacesStamp(spaces))
	}
	if e.stamp <= floor || e.stamp <= sp {
		if e.stamp <= floor {
			r.c.stats.NearMisses[nearMissKey].Add(1)
		} else {
			r.c.stats.NearMisses[nearMissSpaces].Add(1)
		}
		r.n.store.Del(r.hash(key))
		return nil, false
	}
	return e.value, true
}

// keepResult keeps a query result read after stamp: a result over a
// keyed space as a copy of the partition's owner (keepKeyed), any other
// on this node's own (keepOwn).
func (r *nearRegion) keepResult(p int, key, owner string, keyed bool, v []byte, stamp uint64, spaces []string) {
	if keyed {
		r.keepKeyed(p, key, owner, v, stamp, spaces)
		return
	}
	r.keepOwn(key, v, stamp, spaces)
}

// keepKeyed keeps a result over a keyed space that owner answered (or
// whose load it ticketed) after registering this node, unless its key,
// region, partition or spaces changed since stamp, or owner no longer
// owns the partition in this node's table (keyed.go).
func (r *nearRegion) keepKeyed(p int, key, owner string, v []byte, stamp uint64, spaces []string) {
	if testBeforeKeep != nil {
		testBeforeKeep(key)
	}
	f := r.floors(p, key, true)
	if f.owner != owner {
		r.c.stats.NearDrops[nearKeepOwner].Add(1)
		return
	}
	if stamp <= f.max() || stamp <= r.c.spacesStamp(spaces) {
		r.c.stats.NearDrops[nearKeepChanged].Add(1)
		return
	}
	if !r.c.valid() {
		return
	}
	r.store(key, &nearEntry{value: v, stamp: stamp, spaces: slices.Clone(spaces)})
}

// keepOwn keeps a query result whose load began at stamp, unless its key,
// region or spaces changed since.
func (r *nearRegion) keepOwn(key string, v []byte, stamp uint64, spaces []string) {
	if testBeforeKeep != nil {
		testBeforeKeep(key)
	}
	if stamp <= r.ownFloor(key) || stamp <= r.c.spacesStamp(spaces) {
		r.c.stats.NearDrops[nearKeepChanged].Add(1)
		return
	}
	if !r.c.valid() {
		return
	}
	r.store(key, &nearEntry{value: v, stamp: stamp, spaces: slices.Clone(spaces)})
}

// change applies a change of key at its owner (whose entry DISTRIBUTED
// serves after a switch) and, for a query result, which every node keeps
// on its own, on every node before it returns.
func (r *nearRegion) change(ctx context.Context, o op, key string, row []byte) error {
	if err := r.distRegion.change(ctx, o, key, row); err != nil || r.kind != QueryRegion {
		return err
	}
	r.dropKey(key)
	return r.c.publish(ctx, message{Op: o, Region: r.name, Key: key})
}

// nearFloors are the stamps at or below which no near copy of a key is
// served, by where they come from.
type nearFloors struct {
	part, node, key, region uint64
	owner                   string // the partition's owner in this node's table
}

func (f nearFloors) max() uint64 { return max(f.part, f.node, f.key, f.region) }

// cause names the floor that rules out a copy stamped stamp.
func (f nearFloors) cause(stamp uint64) int {
	switch {
	case stamp <= f.key:
		return nearMissKey
	case stamp <= f.part:
		return nearMissPartition
	case stamp <= f.region:
		return nearMissRegion
	}
	return nearMissNode
}

// floors returns key's floors, and its partition's owner (a read, which
// needs no owner, takes the partition's floor without its lock if it can:
// withOwner false).
func (r *nearRegion) floors(p int, key string, withOwner bool) nearFloors {
	var f nearFloors
	if withOwner {
		f.part, f.owner = r.n.part(p)
	} else {
		f.part = r.n.partFloor(p)
	}
	f.node = r.n.floor.Load()
	r.mu.Lock()
	f.key, f.region = r.inv[key], r.cleared
	r.mu.Unlock()
	return f
}

// lookup returns a near copy that is still valid, counting why there is
// none if count. The caller has seen the read lease valid before it
// called: the floors read after that include any reset that regained the
// lease (the lease runs the reset before it is valid again), so one
// check, before, is enough.
func (r *nearRegion) lookup(p int, key string, count bool) ([]byte, bool) {
	e, ok := r.found(key)
	if !ok {
		if count {
			r.countColdMiss(key)
		}
		return nil, false
	}
	f := r.floors(p, key, false)
	floor := f.max()
	var spaces uint64
	if len(e.spaces) > 0 {
		spaces = r.c.spacesStamp(e.spaces)
	}
	if e.stamp <= floor || e.stamp <= spaces {
		if count && e.stamp <= floor {
			r.c.stats.NearMisses[f.cause(e.stamp)].Add(1)
		} else if count {
			r.c.stats.NearMisses[nearMissSpaces].Add(1)
		}
		r.n.store.Del(r.hash(key))
		return nil, false
	}
	return e.value, true
}

// peek is get's near-copy hit without a loader (Typed.Cached): the value,
// counted as get counts a hit, or false, counting nothing (the get that
// follows counts the read). key does not escape.
func (r *nearRegion) peek(key string) ([]byte, bool) {
	if r.kind == QueryRegion || !r.c.valid() {
		return nil, false
	}
	v, ok := r.lookup(r.d.partition(r.name, key), key, false)
	if ok {
		r.stats.NearHits.Add(1)
	}
	return v, ok
}

// keep stores a near copy of what owner answered, unless the key, its
// region or its partition changed since stamp, or owner no longer owns the
// partition in this node's table.
func (r *nearRegion) keep(p int, key, owner string, v []byte, stamp uint64, spaces []string) {
	if testBeforeKeep != nil {
		testBeforeKeep(key)
	}
	if len(spaces) > 0 {
		// Read with query spaces (GetQuery of an entity or collection
		// region): the owner may not have applied every update of them
		// this node has (the near type's doc). Served once, as
		// DISTRIBUTED serves it, and not kept.
		return
	}
	f := r.floors(p, key, true)
	if f.owner != owner {
		r.c.stats.NearDrops[nearKeepOwner].Add(1)
		return
	}
	if stamp <= f.max() {
		r.c.stats.NearDrops[nearKeepChanged].Add(1)
		return
	}
	if !r.c.valid() {
		return
	}
	r.store(key, &nearEntry{value: v, stamp: stamp, spaces: spaces})
}

// store keeps e as key's near copy.
func (r *nearRegion) store(key string, e *nearEntry) {
	e.region, e.key = r, key
	cost := int64(len(e.value) + len(key) + 64)
	if r.c.cfg.TTL > 0 {
		r.n.store.SetWithTTL(r.hash(key), e, cost, r.c.cfg.TTL)
	} else {
		r.n.store.Set(r.hash(key), e, cost)
	}
}

// dropKey records an owner's change of key and drops its near copy.
func (r *nearRegion) dropKey(key string) {
	r.mu.Lock()
	stamp := r.c.tick()
	if len(r.inv) >= r.c.cfg.MaxInvalidations {
		r.c.stats.NearDrops[nearDropOverflow].Add(1)
		r.inv, r.cleared = map[string]uint64{}, stamp
	} else {
		r.inv[key] = stamp
	}
	r.mu.Unlock()
	r.n.store.Del(r.hash(key))
}

// drop forgets the region: its entries at this node as owner or backup,
// and its near copies.
func (r *nearRegion) drop() {
	r.c.stats.NearDrops[nearDropRegion].Add(1)
	r.distRegion.drop()
	r.mu.Lock()
	r.cleared = r.c.tick()
	r.inv = map[string]uint64{}
	r.mu.Unlock()
}

func (r *nearRegion) deliver(m message) {
	switch {
	case m.Op == opClear:
		r.drop()
	case r.kind == QueryRegion && (m.Op == opInvalidate || m.Op == opLock || m.Op == opUnlock):
		r.dropKey(m.Key)
	}
}

func (r *nearRegion) clear(ctx context.Context, id updateID) error {
	r.drop()
	return r.c.publish(ctx, message{Op: opClear, Region: r.name, Upd: id})
}

// nearHolders is an owner's registry of the members that may keep near
// copies of a partition's keys. A member is added to a key's set when the
// owner answers its near read (a hit or a miss), under the partition's
// lock; the key's next change (not a soft lock: keepCopiesLocked) takes
// the set (with wide), and the change is acknowledged only when each
// member in it has dropped the key or been excluded. A member that keeps
// a copy after that has read the key again, and was added again. So a
// change reaches only the members that may hold the key — not every
// member that ever read the partition — and nobody is added while the
// key is soft-locked: an unlock reaches those that held it before the
// lock.
// Past its bound of keys, every set is folded into wide: precision is
// lost (every change then reaches those members), never safety.
type nearHolders struct {
	keys map[string][]string // store key → members that may keep a copy
	wide []string            // members that may keep a copy of any key
	// seq is each member's last change message number: every member
	// sees the partition's messages to it numbered without gaps.
	seq map[string]uint64
}

// addHolder registers m as a holder of skey. Called with dp.mu held.
func (dp *dpart) addHolder(d *dist, skey, m string) {
	h := dp.holders
	if h == nil {
		h = &nearHolders{keys: map[string][]string{}, seq: map[string]uint64{}}
		dp.holders = h
	}
	if slices.Contains(h.wide, m) {
		return
	}
	set, ok := h.keys[skey]
	if slices.Contains(set, m) {
		return
	}
	if !ok && len(h.keys) >= d.holderBound() {
		d.c.stats.NearDrops[nearDropFold].Add(1)
		for _, set := range h.keys {
			for _, o := range set {
				if !slices.Contains(h.wide, o) {
					h.wide = append(h.wide, o)
				}
			}
		}
		clear(h.keys)
		if slices.Contains(h.wide, m) {
			return
		}
	}
	h.keys[skey] = append(set, m)
}

// holderBound is how many keys' holder sets (and change stamps) a
// partition keeps before it folds them: the invalidation stamps' bound,
// shared out over the partitions, and at least minHolderBound.
func (d *dist) holderBound() int {
	return max(d.c.cfg.MaxInvalidations/max(d.keeper.cfg.Partitions, 1), minHolderBound)
}

// minHolderBound is holderBound's floor: 256, so that a small
// MaxInvalidations over many partitions does not fold at every change.
// Tests lower it to run the randomized checks through the folds.
var minHolderBound = 256

// take returns the members to tell of a change of skey, and forgets
// skey's set (they drop their copies now).
func (h *nearHolders) take(skey string) []string {
	set := h.keys[skey]
	delete(h.keys, skey)
	if len(h.wide) == 0 {
		return set
	}
	out := slices.Clone(h.wide)
	for _, m := range set {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// next numbers the next change message to m.
func (h *nearHolders) next(m string) uint64 {
	h.seq[m]++
	return h.seq[m]
}

// forget drops members (excluded: they drop everything before they serve
// again) from every set.
func (h *nearHolders) forget(ms []string) {
	gone := func(m string) bool { return slices.Contains(ms, m) }
	for k, set := range h.keys {
		if set = slices.DeleteFunc(set, gone); len(set) == 0 {
			delete(h.keys, k)
		} else {
			h.keys[k] = set
		}
	}
	h.wide = slices.DeleteFunc(h.wide, gone)
}

// keepCopiesLocked lets the near holders of skey keep their copies through
// a soft lock that o just took (at the owner, with dp.mu held): the row
// does not change before the writer's commit, and a copy of it serves
// reads as well as the database would until the unlock, whose change
// takes the holders and is acknowledged only when each has dropped its
// copy or been excluded — so the lock sends no notices, and the holders
// miss nothing while it is held. If the unlock never comes (the writer
// died after its commit), the lock's sweep takes them: LockTimeout/2
// after the lock, the owner invalidates the key as a change does,
// telling every holder, and until that is acknowledged the lock does not
// expire (untold). So no holder serves a copy from before the lock once a
// read at the owner can load the committed row in its place.
func (d *dist) keepCopiesLocked(dp *dpart, o distOp, skey string) {
	h := dp.holders
	if len(h.keys[skey]) == 0 && len(h.wide) == 0 {
		return // nobody holds a copy, and nobody registers while the key is locked
	}
	l := dp.locks[skey]
	if l == nil {
		return
	}
	l.untold = true
	l.stopSweep()
	l.sweep = time.AfterFunc(d.c.cfg.LockTimeout/2, func() { d.sweepLock(o.Partition, o.Region, o.Key, l) })
}

// sweepLock tells the near holders of a soft-locked key to drop their
// copies when the lock l is still held, and not yet swept, long after it
// was taken (keepCopiesLocked): an invalidation of the key at this owner.
// If that is not acknowledged, it tries again a second later, as long as
// this node owns the partition and l is held. It runs on l's timer.
func (d *dist) sweepLock(p int, region, key string, l *softLock) {
	d.sweepMu.Lock()
	if d.closed {
		d.sweepMu.Unlock()
		return
	}
	d.sweeps.Add(1)
	d.sweepMu.Unlock()
	defer d.sweeps.Done()
	skey := region + "\x00" + key
	held := func(dp *dpart) bool { return dp.owner && dp.locks[skey] == l && l.untold }
	dp, _ := d.part(p)
	dp.mu.Lock()
	ok := held(dp)
	dp.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(d.sweepCtx, d.c.cfg.SyncTimeout)
	rep := d.apply(ctx, d.self, distOp{Kind: kindInvalidate, Partition: p, Region: region, Key: key})
	cancel()
	dp, _ = d.part(p)
	dp.mu.Lock()
	defer dp.mu.Unlock()
	switch {
	case !held(dp):
	case rep.NotOwner || rep.Unavailable:
		l.sweep = time.AfterFunc(time.Second, func() { d.sweepLock(p, region, key, l) })
	default:
		d.c.stats.NearDrops[nearDropSweep].Add(1)
		l.untold = false
	}
}
