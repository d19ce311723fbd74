package l2cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
)

// Invalidation modes.
const (
	// InvalidationAsync: a write invalidates locally and publishes without
	// waiting; other nodes drop the key when the message arrives.
	InvalidationAsync = "async"
	// InvalidationSync: a write waits until every live member has applied
	// the invalidation (or SyncTimeout passes, which is an error).
	InvalidationSync = "sync"
)

// Topic is the bus topic of query-space updates. Each region's key
// invalidations, locks and clears travel on a topic of its own,
// RegionTopic(name), so that a missed message costs only the region it
// was for.
const Topic = "l2"

// RegionTopic is the bus topic of a region's invalidations.
func RegionTopic(region string) string { return Topic + ":" + region }

// Errors.
var (
	// ErrReadOnly: a write-side operation on a read-only region.
	ErrReadOnly = errors.New("l2cache: region is read-only")
	// ErrClosed: the cache has been closed.
	ErrClosed = errors.New("l2cache: cache closed")
)

// NotAckedError is returned by a synchronous invalidation that some
// members did not acknowledge in time. The write itself has committed; the
// members listed may serve the old state until the message reaches them
// (or the bus reports it missed and they clear the region).
type NotAckedError struct{ Members []string }

func (e *NotAckedError) Error() string {
	return "l2cache: invalidation not acknowledged by " + strings.Join(e.Members, ", ")
}

// Bus is what the cache needs from the cluster bus; *cluster.Bus has it.
type Bus interface {
	Publish(topic string, payload []byte) error
	PublishSyncAcks(ctx context.Context, topic string, payload []byte) (acked, notAcked []string, err error)
	Subscribe(topic string, s cluster.Subscriber) (cancel func())
}

// Config configures a Cache.
type Config struct {
	// Mode is cluster.CacheModeLocal, CacheModeDistributed or
	// CacheModeNear.
	Mode string
	// Bus carries invalidations to the other nodes; nil for a single node.
	Bus Bus
	// Node and Keeper are required in DISTRIBUTED mode: the node's peer
	// RPC reaches the partitions' owners, and the keeper says who they are.
	Node   *cluster.Node
	Keeper *TableKeeper
	// MaxCost bounds the cached bytes on this node (default 64 MiB): in
	// ristretto in LOCAL mode, in the partitions this node owns or backs
	// up in DISTRIBUTED mode (evicting at random within a partition).
	MaxCost int64
	// TTL, if set, expires entries this long after they are cached (in
	// DISTRIBUTED mode, after the owner or backup stored them).
	TTL time.Duration
	// Invalidation is InvalidationAsync (default) or InvalidationSync.
	Invalidation string
	// SyncTimeout bounds a synchronous invalidation (default 2 s).
	SyncTimeout time.Duration
	// LockTimeout is when a soft lock that was never released expires
	// (default 30 s).
	LockTimeout time.Duration
	// MaxInvalidations bounds the per-key invalidation stamps a region
	// keeps (default 100,000); past it they collapse into one
	// region-wide stamp. It bounds as well the query spaces' stamps a
	// node keeps, and (shared out over the partitions) an owner's
	// stamps of its partitions' changes.
	MaxInvalidations int
	// Lease, if set, is this node's read lease (see ReadLease and the
	// package doc): cached state is served and stored only while it is
	// valid, everything cached is dropped when it is regained, and a
	// synchronous invalidation that some member did not acknowledge
	// excludes that member instead of failing. Without a lease (a single
	// node, or tests of the bus alone) such an invalidation returns a
	// *NotAckedError. The cache does not close it.
	Lease *ReadLease
	// Now is the clock for lock expiry (default time.Now).
	Now func() time.Time
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig is the cache's defaults: LOCAL, asynchronous
// invalidation, 64 MiB. Validate fills the zero settings from it.
func DefaultConfig() Config {
	return Config{Mode: cluster.CacheModeLocal, Invalidation: InvalidationAsync, MaxCost: 64 << 20,
		SyncTimeout: 2 * time.Second, LockTimeout: 30 * time.Second, MaxInvalidations: 100_000}
}

func (c *Config) validate() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Mode != cluster.CacheModeLocal && (c.Node == nil || c.Keeper == nil) {
		return fmt.Errorf("l2cache: %s mode needs Config.Node and Config.Keeper", c.Mode)
	}
	return nil
}

// Validate fills the zero settings from DefaultConfig and rejects
// nonsense (a refused setting is a *config.FieldError). It does not look
// at Node, Keeper and Bus, which New checks.
func (c *Config) Validate() error {
	d := DefaultConfig()
	fill(&c.Mode, d.Mode)
	if c.Mode != cluster.CacheModeLocal && c.Mode != cluster.CacheModeDistributed && c.Mode != cluster.CacheModeNear {
		return config.Invalid("l2cache", "Mode", c.Mode, cluster.CacheModeLocal+", "+cluster.CacheModeDistributed+" or "+cluster.CacheModeNear)
	}
	fill(&c.Invalidation, d.Invalidation)
	if c.Invalidation != InvalidationAsync && c.Invalidation != InvalidationSync {
		return config.Invalid("l2cache", "Invalidation", c.Invalidation, InvalidationAsync+" or "+InvalidationSync)
	}
	if c.MaxCost < 0 {
		return config.Invalid("l2cache", "MaxCost", c.MaxCost, "a size of at least 0 (0: the default)")
	}
	if c.TTL < 0 {
		return config.Invalid("l2cache", "TTL", c.TTL, "a duration of at least 0 (0: entries do not expire)")
	}
	if c.MaxInvalidations < 0 {
		return config.Invalid("l2cache", "MaxInvalidations", c.MaxInvalidations, "a count of at least 0 (0: the default)")
	}
	fill(&c.MaxCost, d.MaxCost)
	fill(&c.SyncTimeout, d.SyncTimeout)
	fill(&c.LockTimeout, d.LockTimeout)
	fill(&c.MaxInvalidations, d.MaxInvalidations)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// fill sets *v to d if it is zero.
func fill[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// Cache holds regions. Its methods are safe for concurrent use.
type Cache struct {
	cfg    Config
	clock  atomic.Uint64 // the logical clock of loads and invalidations
	unsub  func()        // the query-space topic
	unsubs []func()      // the regions' topics, under mu

	// view is the cluster's cache mode as this node adopted it (mode.go);
	// observed the newest mode epoch a lease renewal read.
	view     atomic.Pointer[modeView]
	observed atomic.Uint64
	modeKick atomic.Pointer[chan struct{}] // the ModeKeeper's prompt

	// backends are the coupling modes this node has used, by index
	// (beLocal, beDist, beNear); created under mu, never removed.
	backends [nBackends]backend

	mu      sync.Mutex
	regions map[string]*Region
	spaces  map[string]uint64 // query space → stamp of its last update
	// spacesFloor is the stamp of the last time every query space was
	// marked updated at once (missed space updates, a lease reset): it
	// covers spaces this node had not heard of yet too.
	spacesFloor uint64
	// updates: the named query-space updates this node applied, and
	// which of them may not have reached every member (updates.go).
	updates spaceUpdates
	closed  bool
	stats   NodeStats
	// retry: the query-space updates to send again, and the goroutine
	// that sends them (retry.go).
	retry     []pendingSpaces
	retryStop context.CancelFunc // stops the retry goroutine (retry.go)
	retryDone chan struct{}

	// inc names this process in the query-space updates it makes, and
	// seqs numbers them (updates.go).
	inc  uint64
	seqs writerSeqs
}

// entry is a cached value with the stamp of the load that produced it.
type entry struct {
	value   []byte
	stamp   uint64
	expires time.Time // DISTRIBUTED only (ristretto keeps LOCAL TTLs); zero: never
	query   bool      // DISTRIBUTED: a query result (checked against query spaces)
}

// New creates a cache and subscribes it to the bus.
func New(cfg Config) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, regions: map[string]*Region{}, spaces: map[string]uint64{}, inc: newIncarnation()}
	// The clock starts at the wall clock's nanoseconds, so a process that
	// restarts under the same name stamps past everything its previous
	// incarnation handed out: an owner's read ticket from before a restart
	// (compared by owner name only) is below every floor after it.
	c.clock.Store(uint64(max(cfg.Now().UnixNano(), 0)))
	// The configured mode runs until a ModeKeeper adopts the cluster's
	// (epoch 0 is older than any record). DISTRIBUTED's owner side runs
	// whatever the mode when the node can own partitions: other nodes may
	// switch to it before this one does.
	v := newView(ModeRecord{Mode: cfg.Mode, Phase: PhaseStable})
	c.view.Store(v)
	for b := range v.touched() {
		if err := c.ensureLocked(b); err != nil {
			c.closeBackends()
			return nil, err
		}
	}
	if cfg.Node != nil && cfg.Keeper != nil {
		if err := c.ensureLocked(beDist); err != nil {
			c.closeBackends()
			return nil, err
		}
	}
	if cfg.Bus != nil {
		c.unsub = cfg.Bus.Subscribe(Topic, cluster.SubscriberFuncs{OnMessage: c.onMessage, OnMissed: c.onMissed})
	}
	if cfg.Node != nil {
		cfg.Node.RPC().HandleInline(rpcSpaces, c.handleSpaces) // it does not block
	}
	if cfg.Lease != nil {
		cfg.Lease.OnReset(c.reset)
		cfg.Lease.Observe(c.observe)
	}
	return c, nil
}

// Close stops listening to the bus and frees the memory. Safe twice.
func (c *Cache) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	unsubs := c.unsubs
	c.mu.Unlock()
	if c.unsub != nil {
		c.unsub()
	}
	for _, u := range unsubs {
		u()
	}
	c.stopRetry()
	c.closeBackends()
}

func (c *Cache) closeBackends() {
	for _, be := range c.backends {
		if be != nil {
			be.close()
		}
	}
}

// Mode is the coupling mode this node runs (during a switch, the mode
// being switched to).
func (c *Cache) Mode() string { return c.view.Load().rec.Mode }

// Region returns the named region, creating it with this kind and access
// strategy. Asking again for an existing name with another kind or
// strategy is an error.
func (c *Cache) Region(name string, kind RegionKind, access AccessType) (*Region, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("l2cache: invalid region name %q", name)
	}
	if kind < EntityRegion || kind > QueryRegion || access < ReadOnly || access > ReadWrite {
		return nil, fmt.Errorf("l2cache: region %q: invalid kind %d or access %d", name, kind, access)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.regions[name]; r != nil {
		if r.kind != kind || r.access != access {
			return nil, fmt.Errorf("l2cache: region %q exists as %v/%v", name, r.kind, r.access)
		}
		return r, nil
	}
	r := &Region{c: c, name: name, kind: kind, access: access, decoded: &decodedMemo{seed: maphash.MakeSeed()}}
	for b, be := range c.backends {
		if be != nil {
			r.setPart(b, be.region(r))
		}
	}
	c.regions[name] = r
	if c.cfg.Bus != nil {
		c.unsubs = append(c.unsubs, c.cfg.Bus.Subscribe(RegionTopic(name), cluster.SubscriberFuncs{
			OnMessage: c.onMessage,
			OnMissed:  func(m cluster.Missed) { c.onRegionMissed(r, m) },
		}))
	}
	return r, nil
}

func (c *Cache) region(name string) *Region {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.regions[name]
}

func (c *Cache) allRegions() []*Region {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Region, 0, len(c.regions))
	for _, r := range c.regions {
		out = append(out, r)
	}
	return out
}

// tick advances the logical clock.
func (c *Cache) tick() uint64 { return c.clock.Add(1) }

// message is an invalidation on the bus.
type message struct {
	Op     op       `msgpack:"o"`
	Region string   `msgpack:"r,omitempty"`
	Key    string   `msgpack:"k,omitempty"`
	Spaces []string `msgpack:"s,omitempty"`
	// Sent is when the sender published it (Unix nanoseconds), for the
	// lag histogram; 0 from a sender that does not say.
	Sent int64 `msgpack:"t,omitempty"`
	// Upd names a query-space update (updates.go); zero from a sender
	// that does not.
	Upd updateID `msgpack:"u,omitempty"`
}

type op uint8

const (
	opInvalidate op = iota + 1 // drop a key
	opLock                     // soft-lock a key
	opUnlock                   // release a soft lock and drop the key
	opClear                    // drop a region
	opSpaces                   // query spaces were updated
)

// publish sends m to the other nodes. With sync invalidation, and always
// in DISTRIBUTED mode (where only query-space updates and region clears
// travel on the bus, and the owners answer reads by them), it returns only
// when every node that could serve what m invalidates has applied it or
// has been excluded from serving (see ReadLease.Exclude). A query-space
// update that must wait so, with a read lease, goes straight to the lease
// holders instead of on the bus (syncSpaces).
func (c *Cache) publish(ctx context.Context, m message) error {
	if c.cfg.Bus == nil {
		return nil
	}
	if m.Op == opSpaces && c.directSpaces() {
		c.stats.InvalidationsSent.Add(1)
		return c.syncSpaces(ctx, m.Spaces, m.Upd, nil)
	}
	return c.publishBus(ctx, m)
}

// directSpaces reports whether a query-space update is sent straight to
// the members (syncSpaces) rather than on the bus: when it must wait for
// every member (syncBus), which the read lease decides, and the node has
// a peer RPC to send it with.
func (c *Cache) directSpaces() bool {
	return c.cfg.Lease != nil && c.cfg.Node != nil && c.syncBus() && !testSpacesOnBus.Load()
}

// testSpacesOnBus, set by benchmarks only, sends every query-space update
// on the bus (as before syncSpaces), for a comparison in one binary.
var testSpacesOnBus atomic.Bool

// publishBus is publish on the bus.
func (c *Cache) publishBus(ctx context.Context, m message) error {
	m.Sent = time.Now().UnixNano()
	data, err := msgpack.Marshal(&m)
	if err != nil {
		return err
	}
	topic := Topic
	if m.Region != "" {
		topic = RegionTopic(m.Region)
	}
	c.stats.InvalidationsSent.Add(1)
	if !c.syncBus() {
		return c.cfg.Bus.Publish(topic, data)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.SyncTimeout)
	defer cancel()
	acked, notAcked, err := c.cfg.Bus.PublishSyncAcks(ctx, topic, data)
	if err != nil {
		return err
	}
	if c.cfg.Lease == nil {
		if len(notAcked) > 0 {
			return &NotAckedError{Members: notAcked}
		}
		return nil
	}
	return c.excludeUnreached(ctx, acked)
}

// excludeUnreached excludes every active lease holder that did not
// acknowledge a synchronous message: a holder the bus did not know of, or
// one that did not answer in time. It waits out their leases, which is
// what an unresponsive member costs a write (ReadLease.Exclude).
func (c *Cache) excludeUnreached(ctx context.Context, acked []string) error {
	// The exclusion gets a deadline of its own: the ack wait may have
	// used up ctx, and the wait it adds is bounded by the lease.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.SyncTimeout+2*c.cfg.Lease.Duration())
	defer cancel()
	holders, err := c.cfg.Lease.Holders(ectx)
	if err != nil {
		return fmt.Errorf("%w: reading the lease registry: %w", ErrExcludeFailed, err)
	}
	var missing []string
	for _, h := range holders {
		if h != c.cfg.Lease.cfg.Name && !slices.Contains(acked, h) {
			missing = append(missing, h)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	c.stats.Exclusions.Add(uint64(len(missing)))
	c.cfg.Logger.Info("l2cache: excluding members that did not acknowledge an invalidation", "members", missing)
	return c.cfg.Lease.Exclude(ectx, missing)
}

// Ready reports why this node's cache cannot serve cached state yet, or
// nil: its read lease is valid and, in DISTRIBUTED mode, it has a
// partition table that includes it and has held it for a lease (a new
// owner answers nothing before then). Reads work meanwhile, through to
// the database.
func (c *Cache) Ready() error {
	if !c.cfg.Lease.Valid() {
		return errors.New("l2cache: no read lease yet (or it lapsed): the cache reads through")
	}
	v := c.view.Load()
	if v.rec.Epoch < c.observed.Load() {
		return fmt.Errorf("l2cache: the cluster's cache mode is at epoch %d, this node has adopted %v: the cache reads through", c.observed.Load(), v.rec)
	}
	for _, b := range v.write {
		if err := c.backends[b].ready(); err != nil {
			return err
		}
	}
	return nil
}

// valid reports whether this node may serve and store cached state now:
// its read lease is valid and it has adopted the newest cache mode
// record its lease renewals saw.
func (c *Cache) valid() bool {
	return c.cfg.Lease.Valid() && c.view.Load().rec.Epoch >= c.observed.Load()
}

// syncBus reports whether bus messages must wait for every node: they
// must if any mode this node writes to needs it.
func (c *Cache) syncBus() bool {
	for _, b := range c.view.Load().write {
		if c.backends[b].syncBus() {
			return true
		}
	}
	return false
}

// reset forgets everything cached on this node: the read lease calls it
// before the lease becomes valid again after this node was excluded (or at
// start), and after a lapse when invalidations travel asynchronously (a
// synchronous one this node did not acknowledge would have excluded it).
// Every entry, ticket and load in flight predates the stamp it takes, so
// none of them is served or stored afterwards.
func (c *Cache) reset(why ResetReason) {
	if why == ResetLapsed && c.syncBus() {
		return
	}
	c.stats.Resets.Add(1)
	c.markAllSpaces()
	for _, r := range c.allRegions() {
		r.eachPart(regionBackend.drop)
	}
	c.eachBackend(backend.reset)
}

// onMessage applies another node's invalidation. It runs on the bus's
// delivery goroutine; nothing here blocks.
func (c *Cache) onMessage(msg cluster.Message) {
	var m message
	if err := msgpack.Unmarshal(msg.Payload, &m); err != nil {
		c.cfg.Logger.Warn("l2cache: dropped an unreadable invalidation", "from", msg.From, "err", err)
		return
	}
	c.stats.InvalidationsReceived.Add(1)
	if m.Sent > 0 {
		c.stats.InvalidationLag.Add(time.Duration(time.Now().UnixNano() - m.Sent))
	}
	if m.Op == opSpaces {
		c.markSpaces(m.Spaces, m.Upd)
		return
	}
	if m.Op == opClear {
		// Named before it is applied (updates.go, clearSpace).
		c.noteUpdate([]string{clearSpace(m.Region)}, m.Upd)
	}
	if r := c.region(m.Region); r != nil {
		r.eachPart(func(p regionBackend) { p.deliver(m) })
	} else {
		c.eachBackend(func(b backend) { b.deliverUnknown(m) })
	}
}

// onMissed handles messages missed on the query-space topic: every cached
// query result may be stale, so every space is marked updated — those this
// node has not heard of yet too.
func (c *Cache) onMissed(m cluster.Missed) {
	c.stats.MissedClears.Add(1)
	c.cfg.Logger.Info("l2cache: invalidating every query result after missed space updates", "from", m.From, "reason", m.Reason)
	c.markAllSpaces()
}

// markAllSpaces marks every query space updated now.
func (c *Cache) markAllSpaces() {
	c.mu.Lock()
	c.spacesFloor = c.tick()
	c.mu.Unlock()
}

// onRegionMissed clears a region after messages for it were missed: the
// cache cannot tell which keys they named. Other regions keep their
// entries.
func (c *Cache) onRegionMissed(r *Region, m cluster.Missed) {
	c.stats.MissedClears.Add(1)
	r.stats.MissedClears.Add(1)
	c.cfg.Logger.Info("l2cache: clearing a region after missed invalidations", "region", r.name, "from", m.From, "reason", m.Reason)
	r.eachPart(regionBackend.drop)
}

// UpdateSpaces records that the tables (query spaces) were written: every
// cached query result over any of them becomes a miss, here and, through
// the bus, on every node — or, for keyed spaces in DISTRIBUTED and NEAR
// mode, at the spaces' owners and the members that read results over
// them (keyed.go). Call it after the write commits.
func (c *Cache) UpdateSpaces(ctx context.Context, spaces ...string) error {
	if err := checkSpaces(spaces); err != nil {
		return err
	}
	defer c.stats.WriteLatency[writeSpaces].Since(time.Now())
	id := c.beginUpdate()
	defer c.endUpdate(id)
	c.markSpaces(spaces, id)
	v := c.enter()
	defer v.exit()
	if d, ok := c.routable(v, spaces); ok {
		// Keyed spaces: through their owners (keyed.go), confirmed as a
		// write is; if not, to every member.
		err := d.routeSpaces(ctx, spaces, id)
		if err == nil {
			err = c.confirm(ctx, v)
		}
		if err == nil {
			c.stats.InvalidationsSent.Add(1)
			return nil
		}
		c.stats.RouteFallbacks.Add(1)
		c.cfg.Logger.Debug("l2cache: a keyed query-space update was not routed; it goes to every member", "err", err)
	}
	return c.publishSpaces(ctx, spaces, id)
}

// publishSpaces sends a write's query-space update to every member
// (publish), and keeps it to send again if that fails (retry.go).
func (c *Cache) publishSpaces(ctx context.Context, spaces []string, id updateID) error {
	err := c.publish(ctx, message{Op: opSpaces, Spaces: spaces, Upd: id})
	if err != nil {
		c.retryLater(spaces, id)
	}
	return err
}

func (c *Cache) markSpaces(spaces []string, id updateID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp := c.tick()
	if len(c.spaces)+len(spaces) > c.cfg.MaxInvalidations {
		// Bounded: past it every space's stamp folds into the floor, as
		// when updates were missed (markAllSpaces). Every query result
		// kept here is then older than the floor, and dropped.
		clear(c.spaces)
		c.spacesFloor = stamp
		c.stats.StampFolds.Add(1)
	}
	for _, s := range spaces {
		c.spaces[s] = stamp
	}
	c.updates.apply(spaces, id)
}

// spacesStamp is the latest update stamp among spaces (at least the
// floor of every space).
func (c *Cache) spacesStamp(spaces []string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	latest := c.spacesFloor
	for _, s := range spaces {
		latest = max(latest, c.spaces[s])
	}
	return latest
}

// eachBackend calls f for every backend this node has created.
func (c *Cache) eachBackend(f func(backend)) {
	c.mu.Lock()
	bes := c.backends
	c.mu.Unlock()
	for _, be := range bes {
		if be != nil {
			f(be)
		}
	}
}

// Stats returns this node's counters and each region's.
func (c *Cache) Stats() Stats {
	st := Stats{Node: c.stats.snapshot(), Regions: map[string]RegionStatsSnapshot{}}
	for _, r := range c.allRegions() {
		rs := r.stats.snapshot()
		st.Regions[r.name] = rs
		st.Node.NearHits += rs.NearHits
	}
	return st
}
