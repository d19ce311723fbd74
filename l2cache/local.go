package l2cache

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// LOCAL mode: every node caches in its own memory (ristretto, bounded by
// cost), judges every entry by the stamps of the package doc, and tells
// the other nodes of each write on the bus.

// local is the LOCAL backend: one ristretto cache for every region.
type local struct {
	c     *Cache
	store *ristretto.Cache[string, *entry]
}

func newLocalBackend(c *Cache) (*local, error) {
	store, err := ristretto.NewCache(&ristretto.Config[string, *entry]{
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
	return &localRegion{Region: r, b: b, invalidated: map[string]uint64{}, locks: map[string]*softLock{}}
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
	loads loads

	mu          sync.Mutex
	invalidated map[string]uint64 // key → stamp of its last invalidation
	cleared     uint64            // stamp of the last region-wide clear
	locks       map[string]*softLock
}

type softLock struct {
	count   int
	expires time.Time
}

func (r *localRegion) storeKey(key string) string { return r.name + "\x00" + key }

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
	e, ok := r.b.store.Get(r.storeKey(key))
	if !ok {
		return nil, false
	}
	if e.stamp <= floor {
		// Loaded before an invalidation: ristretto kept or resurrected
		// it. Never serve it.
		r.b.store.Del(r.storeKey(key))
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
	e := &entry{value: v, stamp: stamp}
	cost := int64(len(v) + len(key) + 64)
	if r.c.cfg.TTL > 0 {
		r.b.store.SetWithTTL(r.storeKey(key), e, cost, r.c.cfg.TTL)
	} else {
		r.b.store.Set(r.storeKey(key), e, cost)
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

// change applies o here, then on every node through the bus.
func (r *localRegion) change(ctx context.Context, o op, key string) error {
	r.apply(o, key)
	return r.c.publish(ctx, message{Op: o, Region: r.name, Key: key})
}

func (r *localRegion) clear(ctx context.Context) error {
	r.drop()
	return r.c.publish(ctx, message{Op: opClear, Region: r.name})
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
	r.b.store.Del(r.storeKey(key))
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

// drop forgets the whole region on this node. Entries stay in ristretto
// until evicted, but their stamps are all below the clear stamp: they will
// never be served.
func (r *localRegion) drop() {
	r.mu.Lock()
	r.cleared = r.c.tick()
	r.invalidated = map[string]uint64{}
	r.mu.Unlock()
}
