package l2cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	// parts are each backend's part of the region, by backend index
	// (nil until the node uses that mode).
	parts [nBackends]atomic.Pointer[partBox]
	// decoded keeps Typed's decoded values of recent hits.
	decoded *decodedMemo
}

type partBox struct{ regionBackend }

func (r *Region) setPart(b int, p regionBackend) { r.parts[b].Store(&partBox{p}) }

// part is backend b's part of the region, or nil.
func (r *Region) part(b int) regionBackend {
	if p := r.parts[b].Load(); p != nil {
		return p.regionBackend
	}
	return nil
}

func (r *Region) eachPart(f func(regionBackend)) {
	for b := range r.parts {
		if p := r.part(b); p != nil {
			f(p)
		}
	}
}

// Name is the region's name.
func (r *Region) Name() string { return r.name }

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
// A space's name may not begin with a NUL byte (ErrReservedSpace), here
// and in every call that takes spaces. A query over a keyed space
// ({name}: KeyedSpace) carries it as its key's hash tag, and names no
// other keyed space (ErrKeyedSpace): in DISTRIBUTED and NEAR mode the
// space's updates go only to its owner and the members that read results
// over it (keyed.go).
func (r *Region) GetQuery(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	if err := checkSpaces(spaces); err != nil {
		return nil, err
	}
	if err := checkKeyed(key, spaces); err != nil {
		return nil, err
	}
	return r.get(ctx, key, spaces, load)
}

func (r *Region) get(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error) {
	v := r.c.enter()
	defer v.exit()
	return r.part(v.read).get(ctx, key, spaces, load)
}

// GetMany is Get of several keys of an entity or collection region,
// load(ctx, i) loading keys[i]: the value and error of each key, as Get
// would return them. In NEAR mode the keys this node holds no near copy
// of are asked of their owners in one message per owner, sent together
// (a page of a list whose rows this node has not read yet costs one round
// trip per owner, not one per row); the other modes read them one by one.
func (r *Region) GetMany(ctx context.Context, keys []string, load func(ctx context.Context, i int) ([]byte, error)) ([][]byte, []error) {
	vals, errs := make([][]byte, len(keys)), make([]error, len(keys))
	if r.kind == QueryRegion {
		for i := range errs {
			errs[i] = fmt.Errorf("l2cache: GetMany of query region %s: use GetQuery", r.name)
		}
		return vals, errs
	}
	v := r.c.enter()
	defer v.exit()
	if p, ok := r.part(v.read).(*nearRegion); ok {
		return p.getMany(ctx, keys, load)
	}
	for i, k := range keys {
		vals[i], errs[i] = r.part(v.read).get(ctx, k, nil, func(ctx context.Context) ([]byte, error) { return load(ctx, i) })
	}
	return vals, errs
}

// peek returns key's value if the mode read holds it on this node and may
// serve it as it is (a LOCAL hit or a NEAR near-copy hit, counted), or
// false, counting nothing. The parts are called by their types, not
// through regionBackend, so that key does not escape: see Typed.Cached.
func (r *Region) peek(key string, spaces []string) ([]byte, bool) {
	v := r.c.enter()
	defer v.exit()
	switch p := r.part(v.read).(type) {
	case *localRegion:
		return p.peek(key, spaces)
	case *nearRegion:
		if len(spaces) == 0 {
			return p.peek(key)
		}
	}
	return nil, false
}

// Evict invalidates key after a committed write, on this node and every
// other (nonstrict-read-write, or any writable region). With spaces, it
// then marks those query spaces updated, as UpdateSpaces does (see
// Unlock).
func (r *Region) Evict(ctx context.Context, key string, spaces ...string) error {
	return r.change(ctx, opInvalidate, key, spaces, nil)
}

// EvictAll invalidates the whole region, here and on every node.
func (r *Region) EvictAll(ctx context.Context) error {
	if r.access == ReadOnly {
		return fmt.Errorf("%w: %s", ErrReadOnly, r.name)
	}
	var id updateID
	if r.kind == QueryRegion {
		// Named, as a query-space update is (updates.go, clearSpace).
		id = r.c.beginUpdate()
		defer r.c.endUpdate(id)
		r.c.noteUpdate([]string{clearSpace(r.name)}, id)
	}
	v := r.c.enter()
	defer v.exit()
	for _, b := range v.write {
		if err := r.part(b).clear(ctx, id); err != nil {
			return err
		}
	}
	return r.c.confirm(ctx, v)
}

// Lock soft-locks key before an update of a read-write region, on this
// node and every other: until Unlock (or LockTimeout), reads of the key are
// misses and loads are not cached — except, in NEAR mode, reads of a near
// copy kept before the lock, which is still the committed row until the
// transaction commits, and which Unlock drops on every node before it
// returns (or the owner, if no Unlock comes, before the lock expires).
// Pair every Lock with an Unlock after the transaction ends, committed or
// not.
func (r *Region) Lock(ctx context.Context, key string) error {
	return r.change(ctx, opLock, key, nil, nil)
}

// Unlock releases the soft lock after the transaction and invalidates the
// key, here and on every node. With spaces (the tables the transaction
// wrote, after a commit), it then marks those query spaces updated, as
// UpdateSpaces does, even if the unlock failed; an error of either is
// returned. In DISTRIBUTED and NEAR mode the update rides on the unlock's
// own messages — the request to the key's owner, the replication to its
// backups, the notices to its near holders — and only the members those
// did not reach are sent it apart (changeSpaces).
func (r *Region) Unlock(ctx context.Context, key string, spaces ...string) error {
	return r.change(ctx, opUnlock, key, spaces, nil)
}

// UnlockWith is Unlock after a committed update, with the row the
// transaction wrote (encoded as the region's values are): in DISTRIBUTED
// and NEAR mode, if no other writer locked the key while this one held
// it, the owner keeps the row as the key's entry and every near holder
// keeps it in place of its copy, so the next reads hit instead of
// loading. In LOCAL mode it is Unlock.
func (r *Region) UnlockWith(ctx context.Context, key string, value []byte, spaces ...string) error {
	return r.change(ctx, opUnlock, key, spaces, value)
}

func (r *Region) change(ctx context.Context, o op, key string, spaces []string, row []byte) error {
	if r.access == ReadOnly {
		return fmt.Errorf("%w: %s", ErrReadOnly, r.name)
	}
	if err := checkSpaces(spaces); err != nil {
		return err
	}
	defer r.c.stats.WriteLatency[writeOpOf(o)].Since(time.Now())
	var id updateID
	if len(spaces) > 0 {
		id = r.c.beginUpdate()
		defer r.c.endUpdate(id)
		r.c.markSpaces(spaces, id)
	}
	v := r.c.enter()
	defer v.exit()
	// An update of keyed spaces goes to their owners alongside the change
	// (keyed.go), not in the change's messages to every member.
	var route *routing
	if d, ok := r.c.routable(v, spaces); ok {
		route = d.goRoute(ctx, spaces, id)
	}
	carrier, carried := r.spacesCarrier(v, spaces)
	carried = carried && route == nil
	var covered []string
	var err error
	for _, b := range v.write {
		if carried {
			covered, err = carrier.changeSpaces(ctx, o, key, spaces, id, row)
		} else {
			err = r.part(b).change(ctx, o, key, row)
		}
		if err != nil {
			break
		}
	}
	var routeErr error
	if route != nil {
		routeErr = route.wait()
	}
	if err == nil {
		err = r.c.confirm(ctx, v)
	}
	switch {
	case len(spaces) == 0:
		return err
	case route != nil && routeErr == nil && err == nil:
		r.c.stats.InvalidationsSent.Add(1)
		return nil
	case route != nil && routeErr != nil:
		r.c.stats.RouteFallbacks.Add(1)
		r.c.cfg.Logger.Debug("l2cache: a keyed query-space update was not routed; it goes to every member", "err", routeErr)
	case carried && err == nil:
		r.c.stats.InvalidationsSent.Add(1)
		return r.c.syncSpaces(ctx, spaces, id, covered)
	}
	// Sent apart: after a failed change (or routing), to every member.
	return errors.Join(err, r.c.publishSpaces(ctx, spaces, id))
}

// spacesCarrier returns the backend that carries a change's query-space
// update in the change's own messages, if there is one: an entity or
// collection region whose one written mode (no switch under way) is
// DISTRIBUTED or NEAR, on a node that sends the update straight
// (directSpaces).
func (r *Region) spacesCarrier(v *modeView, spaces []string) (spacesCarrier, bool) {
	if len(spaces) == 0 || r.kind == QueryRegion || len(v.write) != 1 || !r.c.directSpaces() {
		return nil, false
	}
	sc, ok := r.part(v.write[0]).(spacesCarrier)
	return sc, ok
}

// spacesCarrier is a backend whose change can carry a query-space update
// to the members its messages reach. changeSpaces returns those members:
// each has applied the update, or been excluded from serving.
type spacesCarrier interface {
	changeSpaces(ctx context.Context, o op, key string, spaces []string, id updateID, row []byte) (covered []string, err error)
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

// loadCall is one load in flight, shared by the Gets of the same key that
// may join it (each mode says which).
type loadCall struct {
	stamp  uint64 // taken when the load began (LOCAL)
	ticket ticket // the owner's ticket (DISTRIBUTED)
	done   chan struct{}
	value  []byte
	err    error
	hit    bool // the value is a cache's, not a load's (NEAR's query gets)
}

// loads merges the loads of one key on this node. The zero value is ready.
type loads struct {
	mu    sync.Mutex
	calls map[string]*loadCall
}

// start registers a load of key unless one is in flight that may be
// joined, in which case it returns that one and ok false. A load that may
// not be joined is not replaced: the newer one runs on its own.
func (l *loads) start(key string, joinable func(*loadCall) bool, own *loadCall) (call *loadCall, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.calls[key]
	if cur != nil && joinable(cur) {
		return cur, false
	}
	if cur == nil {
		if l.calls == nil {
			l.calls = map[string]*loadCall{}
		}
		l.calls[key] = own
	}
	return own, true
}

// finish unregisters a load and wakes the Gets that joined it.
func (l *loads) finish(key string, own *loadCall) ([]byte, error) {
	l.mu.Lock()
	if l.calls[key] == own {
		delete(l.calls, key)
	}
	l.mu.Unlock()
	close(own.done)
	return own.value, own.err
}

// The seam between a Cache and its coupling mode. A mode is a file: it
// implements backend, and regionBackend for each region; nothing outside
// it asks which mode is running.

// backend is a coupling mode: where a node keeps entries, how it judges
// them, and how a write reaches every copy.
type backend interface {
	// region returns the mode's part of a new region.
	region(r *Region) regionBackend
	// deliverUnknown applies another node's message for a region this
	// node has not created.
	deliverUnknown(m message)
	// syncBus reports whether bus messages must wait for every node.
	syncBus() bool
	// reset drops everything the node holds beyond its regions' own
	// state (Region backends are dropped one by one by the Cache).
	reset()
	// ready reports why the mode cannot serve cached state yet, or nil.
	ready() error
	close()
}

// regionBackend is a mode's part of one region.
type regionBackend interface {
	// get answers Get and GetQuery.
	get(ctx context.Context, key string, spaces []string, load Loader) ([]byte, error)
	// change applies an invalidation, a soft lock or an unlock of key
	// everywhere it must reach before it returns. row, on an unlock only,
	// is the row the writer committed (UnlockWith), or nil.
	change(ctx context.Context, o op, key string, row []byte) error
	// clear drops the region everywhere (EvictAll).
	clear(ctx context.Context, id updateID) error
	// deliver applies another node's message for the region.
	deliver(m message)
	// drop forgets the region on this node: after missed messages, or a
	// lease reset. Nothing cached before is served again.
	drop()
}
