package l2cache

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// RegionKind is what a region holds.
type RegionKind int

const (
	// EntityRegion holds entities by id.
	EntityRegion RegionKind = iota + 1
	// CollectionRegion holds collections (an owner's list of ids).
	CollectionRegion
	// QueryRegion holds query results, each guarded by the query spaces
	// (tables) it read: see Cache.UpdateSpaces.
	QueryRegion
)

func (k RegionKind) String() string {
	return [...]string{"?", "entity", "collection", "query"}[min(int(k), 3)]
}

// AccessType is a region's concurrency strategy.
type AccessType int

const (
	// ReadOnly regions cache loads; writes to them are refused.
	ReadOnly AccessType = iota + 1
	// NonstrictReadWrite regions are invalidated after each commit (Evict).
	NonstrictReadWrite
	// ReadWrite regions are soft-locked from the start of an update
	// (Lock) until after its commit (Unlock).
	ReadWrite
)

func (a AccessType) String() string {
	return [...]string{"?", "read-only", "nonstrict-read-write", "read-write"}[min(int(a), 3)]
}

// Loader reads a value from the system of record (the database). An error
// is returned to the caller and nothing is cached.
type Loader func(ctx context.Context) ([]byte, error)

// Region is a named part of the cache. Its methods are safe for concurrent
// use.
type Region struct {
	c      *Cache
	name   string
	kind   RegionKind
	access AccessType
	stats  RegionStats

	mu          sync.Mutex
	invalidated map[string]uint64 // key → stamp of its last invalidation
	cleared     uint64            // stamp of the last region-wide clear
	locks       map[string]*softLock
	loads       map[string]*loadCall
}

type softLock struct {
	count   int
	expires time.Time
}

// loadCall is one load in flight, shared by the Gets of the same key that
// start before anything invalidates it.
type loadCall struct {
	stamp  uint64 // taken when the load began (LOCAL)
	ticket ticket // the owner's ticket (DISTRIBUTED)
	done   chan struct{}
	value  []byte
	err    error
}

func newRegion(c *Cache, name string, kind RegionKind, access AccessType) *Region {
	return &Region{c: c, name: name, kind: kind, access: access,
		invalidated: map[string]uint64{}, locks: map[string]*softLock{}, loads: map[string]*loadCall{}}
}

// Name is the region's name.
func (r *Region) Name() string { return r.name }

func (r *Region) storeKey(key string) string { return r.name + "\x00" + key }

// Get returns the cached value of key, or loads it with load (one load per
// key on this node at a time: concurrent Gets wait for it and share its
// result) and caches it unless an invalidation or a soft lock since the
// load began forbids it.
func (r *Region) Get(ctx context.Context, key string, load Loader) ([]byte, error) {
	return r.get(ctx, key, nil, load)
}

// GetQuery is Get for a query region: the result is cached against the
// query spaces (tables) it reads, and any UpdateSpaces of one of them
// after the load began makes it a miss.
func (r *Region) GetQuery(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	return r.get(ctx, key, spaces, load)
}

func (r *Region) get(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	if r.c.dist != nil {
		return r.distGet(ctx, key, spaces, load)
	}
	if !r.c.valid() {
		// No read lease: this node may have missed invalidations it
		// cannot know about. Read through, cache nothing.
		r.stats.Misses.Add(1)
		r.stats.Loads.Add(1)
		return load(ctx)
	}
	if v, ok := r.lookup(key, spaces); ok {
		r.stats.Hits.Add(1)
		return v, nil
	}
	r.stats.Misses.Add(1)
	floor := r.c.spacesStamp(spaces)
	r.mu.Lock()
	floor = max(floor, r.invalidated[key], r.cleared)
	call := r.loads[key]
	if call != nil && call.stamp > floor {
		// Join the load in flight: it began after the last invalidation
		// this Get could know of, so its result is as fresh as a new one.
		r.mu.Unlock()
		return r.join(ctx, call)
	}
	own := &loadCall{stamp: r.c.tick(), done: make(chan struct{})}
	if call == nil {
		r.loads[key] = own
	}
	// else: the load in flight began before an invalidation that this Get
	// must observe (a write that returned before it started), so it loads
	// on its own and leaves the older load in place.
	r.mu.Unlock()
	own.value, own.err = r.load(ctx, key, spaces, own.stamp, load)
	return r.finish(key, own)
}

// join waits for a load in flight and shares its result.
func (r *Region) join(ctx context.Context, call *loadCall) ([]byte, error) {
	r.stats.MergedLoads.Add(1)
	select {
	case <-call.done:
		return call.value, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// finish ends this Get's own load: it unregisters it and wakes the Gets
// that joined it.
func (r *Region) finish(key string, own *loadCall) ([]byte, error) {
	r.mu.Lock()
	if r.loads[key] == own {
		delete(r.loads, key)
	}
	r.mu.Unlock()
	close(own.done)
	return own.value, own.err
}

// load runs inside the merged call, with the stamp taken when it began. It
// checks the cache again: another load may have filled it between this
// Get's miss and its turn to load.
func (r *Region) load(ctx context.Context, key string, spaces []string, stamp uint64, load Loader) ([]byte, error) {
	if v, ok := r.lookup(key, spaces); ok {
		return v, nil
	}
	r.stats.Loads.Add(1)
	v, err := load(ctx)
	if err != nil {
		return nil, err
	}
	r.putFromLoad(key, spaces, v, stamp)
	return v, nil
}

// lookup returns a cached value that is still valid: not soft-locked, and
// loaded after the key's, the region's and its query spaces' last
// invalidation.
func (r *Region) lookup(key string, spaces []string) ([]byte, bool) {
	if !r.c.valid() {
		return nil, false
	}
	r.mu.Lock()
	locked := r.lockedLocked(key)
	floor := max(r.invalidated[key], r.cleared)
	r.mu.Unlock()
	if locked {
		return nil, false
	}
	if len(spaces) > 0 {
		floor = max(floor, r.c.spacesStamp(spaces))
	}
	e, ok := r.c.store.Get(r.storeKey(key))
	if !ok {
		return nil, false
	}
	if e.stamp <= floor {
		// Loaded before an invalidation: ristretto kept or resurrected
		// it. Never serve it.
		r.c.store.Del(r.storeKey(key))
		return nil, false
	}
	return e.value, true
}

// putFromLoad caches a loaded value unless something invalidated or
// soft-locked the key after the load's stamp was taken.
func (r *Region) putFromLoad(key string, spaces []string, v []byte, stamp uint64) {
	r.mu.Lock()
	refused := r.lockedLocked(key) || r.invalidated[key] > stamp || r.cleared > stamp || !r.c.valid()
	r.mu.Unlock()
	if !refused && len(spaces) > 0 {
		refused = r.c.spacesStamp(spaces) > stamp
	}
	if refused {
		r.stats.RefusedPuts.Add(1)
		return
	}
	r.stats.Puts.Add(1)
	e := &entry{value: v, stamp: stamp}
	cost := int64(len(v) + len(key) + 64)
	if r.c.cfg.TTL > 0 {
		r.c.store.SetWithTTL(r.storeKey(key), e, cost, r.c.cfg.TTL)
	} else {
		r.c.store.Set(r.storeKey(key), e, cost)
	}
}

func (r *Region) lockedLocked(key string) bool {
	l := r.locks[key]
	if l == nil {
		return false
	}
	if r.c.cfg.Now().After(l.expires) {
		delete(r.locks, key) // never released: expired
		return false
	}
	return true
}

// Evict invalidates key after a committed write, on this node and every
// other (nonstrict-read-write, or any writable region).
func (r *Region) Evict(ctx context.Context, key string) error {
	if r.access == ReadOnly {
		return fmt.Errorf("%w: %s", ErrReadOnly, r.name)
	}
	if r.c.dist != nil {
		return r.distChange(ctx, opInvalidate, key)
	}
	r.invalidateLocal(key)
	return r.c.publish(ctx, message{Op: opInvalidate, Region: r.name, Key: key})
}

// EvictAll invalidates the whole region, here and on every node.
func (r *Region) EvictAll(ctx context.Context) error {
	if r.access == ReadOnly {
		return fmt.Errorf("%w: %s", ErrReadOnly, r.name)
	}
	r.clearLocal()
	if r.c.dist != nil {
		r.c.dist.clearRegion(r.name)
	}
	return r.c.publish(ctx, message{Op: opClear, Region: r.name})
}

// Lock soft-locks key before an update of a read-write region, on this
// node and every other: until Unlock (or LockTimeout), reads of the key are
// misses and loads are not cached. Pair every Lock with an Unlock after the
// transaction ends, committed or not.
func (r *Region) Lock(ctx context.Context, key string) error {
	if r.access == ReadOnly {
		return fmt.Errorf("%w: %s", ErrReadOnly, r.name)
	}
	if r.c.dist != nil {
		return r.distChange(ctx, opLock, key)
	}
	r.lockLocal(key)
	return r.c.publish(ctx, message{Op: opLock, Region: r.name, Key: key})
}

// Unlock releases the soft lock after the transaction and invalidates the
// key, here and on every node.
func (r *Region) Unlock(ctx context.Context, key string) error {
	if r.access == ReadOnly {
		return fmt.Errorf("%w: %s", ErrReadOnly, r.name)
	}
	if r.c.dist != nil {
		return r.distChange(ctx, opUnlock, key)
	}
	r.unlockLocal(key)
	return r.c.publish(ctx, message{Op: opUnlock, Region: r.name, Key: key})
}

func (r *Region) invalidateLocal(key string) {
	r.mu.Lock()
	r.recordLocked(key)
	r.mu.Unlock()
	r.stats.Invalidations.Add(1)
	r.c.store.Del(r.storeKey(key))
}

// recordLocked stamps an invalidation of key, collapsing the table into a
// region-wide stamp when it is full.
func (r *Region) recordLocked(key string) {
	stamp := r.c.tick()
	if len(r.invalidated) >= r.c.cfg.MaxInvalidations {
		r.invalidated = map[string]uint64{}
		r.cleared = stamp
		return
	}
	r.invalidated[key] = stamp
}

func (r *Region) lockLocal(key string) {
	r.mu.Lock()
	l := r.locks[key]
	if l == nil || r.c.cfg.Now().After(l.expires) {
		l = &softLock{}
		r.locks[key] = l
	}
	l.count++
	l.expires = r.c.cfg.Now().Add(r.c.cfg.LockTimeout)
	r.recordLocked(key)
	r.mu.Unlock()
	r.c.store.Del(r.storeKey(key))
}

func (r *Region) unlockLocal(key string) {
	r.mu.Lock()
	if l := r.locks[key]; l != nil {
		if l.count--; l.count <= 0 {
			delete(r.locks, key)
		}
	}
	r.recordLocked(key)
	r.mu.Unlock()
	r.stats.Invalidations.Add(1)
	r.c.store.Del(r.storeKey(key))
}

// clearLocal drops the whole region on this node.
func (r *Region) clearLocal() {
	r.mu.Lock()
	r.cleared = r.c.tick()
	r.invalidated = map[string]uint64{}
	r.mu.Unlock()
	// Entries stay in ristretto until evicted, but their stamps are all
	// below the clear stamp: they will never be served.
}

// distGet is Get in DISTRIBUTED mode: the owner answers hit or miss; a
// miss carries the owner's ticket, and the load's result is offered to the
// owner with it. Loads of one key on this node are merged only with a load
// whose ticket is newer than the key's latest invalidation at the owner.
// If the owner cannot be reached in SyncTimeout the value is loaded and
// returned without caching: the cache is an optimisation, not a dependency.
func (r *Region) distGet(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	d := r.c.dist
	gctx, cancel := context.WithTimeout(ctx, r.c.cfg.SyncTimeout)
	rep, err := d.get(gctx, r.name, key, spaces)
	cancel()
	if err != nil || rep.Unavailable {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.stats.Misses.Add(1)
		r.stats.Loads.Add(1)
		return load(ctx)
	}
	if rep.Hit {
		r.stats.Hits.Add(1)
		return rep.Value, nil
	}
	r.stats.Misses.Add(1)
	r.mu.Lock()
	call := r.loads[key]
	if call != nil && call.ticket.Owner == rep.Ticket.Owner && call.ticket.Stamp > rep.Floor {
		r.mu.Unlock()
		return r.join(ctx, call)
	}
	own := &loadCall{ticket: rep.Ticket, done: make(chan struct{})}
	if call == nil {
		r.loads[key] = own
	}
	r.mu.Unlock()
	r.stats.Loads.Add(1)
	own.value, own.err = load(ctx)
	if own.err == nil {
		pctx, cancel := context.WithTimeout(ctx, r.c.cfg.SyncTimeout)
		if ok, _ := d.put(pctx, r.name, key, spaces, own.value, rep.Ticket); ok {
			r.stats.Puts.Add(1)
		} else {
			r.stats.RefusedPuts.Add(1)
		}
		cancel()
	}
	return r.finish(key, own)
}

// distChange applies an invalidation or a soft lock at the key's owner
// (and its backups), retrying across ownership changes until ctx ends (10 s
// if ctx has no deadline). An error means the write may still be cached.
func (r *Region) distChange(ctx context.Context, o op, key string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	r.stats.Invalidations.Add(1)
	return r.c.dist.change(ctx, o, r.name, key)
}
