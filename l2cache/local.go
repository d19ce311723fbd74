package l2cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// LOCAL mode: every node caches in its own memory (ristretto, bounded by
// cost), judges every entry by the stamps of the package doc, and tells
// the other nodes of each write on the bus.

// local is the LOCAL backend: one ristretto cache for every region,
// keyed by a hash of the region and the key (see localRegion.hash), so
// that a read builds no key string.
type local struct {
	c     *Cache
	store *ristretto.Cache[uint64, *localEntry]
}

// localEntry is a LOCAL entry. The store knows it by a 64-bit hash only,
// so it keeps its region and key: a read checks them, and another key
// whose hash collides is a miss, as if its entry had been evicted (a write
// of either replaces the other's).
type localEntry struct {
	entry
	region *localRegion
	key    string
}

func newLocalBackend(c *Cache) (*local, error) {
	store, err := ristretto.NewCache(&ristretto.Config[uint64, *localEntry]{
		NumCounters:        max(c.cfg.MaxCost/100, 1000), // ~10 counters per expected item of ~1 KiB
		MaxCost:            c.cfg.MaxCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("l2cache: %w", err)
	}
	return &local{c: c, store: store}, nil
}

func (b *local) region(r *Region) regionBackend {
	return &localRegion{Region: r, b: b, seed: maphash.MakeSeed(), invalidated: map[string]uint64{}, locks: map[string]*softLock{}}
}

func (b *local) deliverUnknown(message) {} // a region this node has not used has nothing to drop
func (b *local) syncBus() bool          { return b.c.cfg.Invalidation == InvalidationSync }
func (b *local) reset()                 {} // the regions hold everything
func (b *local) ready() error           { return nil }
func (b *local) close()                 { b.store.Close() }

// localRegion is a region's state on this node in LOCAL mode.
type localRegion struct {
	*Region
	b     *local
	seed  maphash.Seed // of the keys' hashes: each region its own
	loads loads

	mu          sync.Mutex
	invalidated map[string]uint64 // key → stamp of its last invalidation
	cleared     uint64            // stamp of the last region-wide clear
	locks       map[string]*softLock
}

type softLock struct {
	count   int
	expires time.Time
	// NEAR mode, at the owner: untold is set while members may keep near
	// copies from before the lock that no change has dropped yet, and
	// sweep is the timer of the lock's sweep (dist.keepCopiesLocked).
	// The lock does not expire while untold.
	untold bool
	sweep  *time.Timer
	// concurrent is set when the key was locked again while held: the
	// unlock that brings count to 0 may not be the last commit, so it
	// keeps no value (dist.apply, an unlock with the written row).
	concurrent bool
}

// stopSweep stops the lock's sweep, if it has one. Called with the lock's
// partition's lock held.
func (l *softLock) stopSweep() {
	if l.sweep != nil {
		l.sweep.Stop()
	}
}

// hash is key's key in the store. Each region hashes with its own seed,
// so two regions' keys collide no more often than two keys of one.
func (r *localRegion) hash(key string) uint64 { return maphash.String(r.seed, key) }

func (r *localRegion) get(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
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
	r.mu.Unlock()
	// Join the load in flight only if it began after the last
	// invalidation this Get could know of: its result is then as fresh as
	// a new one. Otherwise (a write returned before this Get started) load
	// on its own and leave the older load in place.
	own := &loadCall{stamp: r.c.tick(), done: make(chan struct{})}
	call, mine := r.loads.start(key, func(c *loadCall) bool { return c.stamp > floor }, own)
	if !mine {
		return r.join(ctx, call)
	}
	own.value, own.err = r.load(ctx, key, spaces, own.stamp, load)
	return r.loads.finish(key, own)
}

// peek is get's hit: the value if lookup finds it, counted as a hit, or
// false, counting nothing (get, which the caller runs next, counts the
// miss).
func (r *localRegion) peek(key string, spaces []string) ([]byte, bool) {
	v, ok := r.lookup(key, spaces)
	if ok {
		r.stats.Hits.Add(1)
	}
	return v, ok
}

// load runs inside the merged call, with the stamp taken when it began. It
// checks the cache again: another load may have filled it between this
// Get's miss and its turn to load.
func (r *localRegion) load(ctx context.Context, key string, spaces []string, stamp uint64, load Loader) ([]byte, error) {
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
func (r *localRegion) lookup(key string, spaces []string) ([]byte, bool) {
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
	h := r.hash(key)
	e, ok := r.b.store.Get(h)
	if !ok || e.region != r || e.key != key {
		return nil, false
	}
	if e.stamp <= floor {
		// Loaded before an invalidation: ristretto kept or resurrected
		// it. Never serve it.
		r.b.store.Del(h)
		return nil, false
	}
	return e.value, true
}

// putFromLoad caches a loaded value unless something invalidated or
// soft-locked the key after the load's stamp was taken, or the read lease
// is not valid.
func (r *localRegion) putFromLoad(key string, spaces []string, v []byte, stamp uint64) {
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
	e := &localEntry{entry: entry{value: v, stamp: stamp}, region: r, key: key}
	cost := int64(len(v) + len(key) + 64)
	if r.c.cfg.TTL > 0 {
		r.b.store.SetWithTTL(r.hash(key), e, cost, r.c.cfg.TTL)
	} else {
		r.b.store.Set(r.hash(key), e, cost)
	}
}

func (r *localRegion) lockedLocked(key string) bool {
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

// change applies o here, then on every node through the bus. An unlock's
// row is not kept: the other nodes learn of the change asynchronously,
// and one of them may still put the row from before it.
func (r *localRegion) change(ctx context.Context, o op, key string, _ []byte) error {
	r.apply(o, key)
	return r.c.publish(ctx, message{Op: o, Region: r.name, Key: key})
}

func (r *localRegion) clear(ctx context.Context, id updateID) error {
	r.drop()
	return r.c.publish(ctx, message{Op: opClear, Region: r.name, Upd: id})
}

func (r *localRegion) deliver(m message) {
	if m.Op == opClear {
		r.drop()
		return
	}
	r.apply(m.Op, m.Key)
}

func (r *localRegion) apply(o op, key string) {
	r.mu.Lock()
	switch o {
	case opLock:
		l := r.locks[key]
		if l == nil || r.c.cfg.Now().After(l.expires) {
			l = &softLock{}
			r.locks[key] = l
		}
		l.count++
		l.expires = r.c.cfg.Now().Add(r.c.cfg.LockTimeout)
	case opUnlock:
		if l := r.locks[key]; l != nil {
			if l.count--; l.count <= 0 {
				delete(r.locks, key)
			}
		}
	}
	r.recordLocked(key)
	r.mu.Unlock()
	if o != opLock {
		r.stats.Invalidations.Add(1)
	}
	r.b.store.Del(r.hash(key))
}

// recordLocked stamps an invalidation of key, collapsing the table into a
// region-wide stamp when it is full.
func (r *localRegion) recordLocked(key string) {
	stamp := r.c.tick()
	if len(r.invalidated) >= r.c.cfg.MaxInvalidations {
		r.invalidated = map[string]uint64{}
		r.cleared = stamp
		return
	}
	r.invalidated[key] = stamp
}

// dropLocks forgets the region's soft locks: LOCAL mode is no longer used
// (lockDropper).
func (r *localRegion) dropLocks() {
	r.mu.Lock()
	clear(r.locks)
	r.mu.Unlock()
}

// drop forgets the whole region on this node. Entries stay in ristretto
// until evicted, but their stamps are all below the clear stamp: they will
// never be served.
func (r *localRegion) drop() {
	r.mu.Lock()
	r.cleared = r.c.tick()
	r.invalidated = map[string]uint64{}
	r.mu.Unlock()
}
