package l2cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/config"
)

// Switching a running cluster's cache mode.
//
// The mode is the cluster's, not a node's: a record in the consistent
// store (ModeKey) holds it, every node's ModeKeeper adopts it, and a
// switch walks the record through four phases, each a new epoch:
//
//	stable(A)      reads from A, writes to A
//	dual(A→B)      reads from A, writes to A and B
//	switched(A→B)  reads from B, writes to A and B
//	stable(B)      reads from B, writes to B
//
// The raft leader's keeper moves the record to the next phase only when
// every node holding a read lease has acknowledged the current one, and a
// node acknowledges a phase only after it adopted it and every operation
// that began under the previous phase has finished (the view's gate). So
// no node reads B before every node writes to B, and no node stops
// writing A before every node reads B. A node that does not acknowledge
// within PhaseTimeout is excluded through its read lease
// (ReadLease.Exclude), which waits out its lease before the phase moves.
//
// Why no read is stale: a write that ran under the phase of epoch e
// invalidated every mode read in epochs e and e+1 (see the table above).
// The record reaches e+2 only after this node acknowledged e+1 — which
// waited for the write — or after it was excluded and its lease ran out.
// So a write reports success only if, when it ends, this node's lease is
// valid and its last renewal saw no epoch beyond e+1; otherwise it
// returns ErrModeChanged (the write committed; the cache may not have
// seen it), as an unacknowledged synchronous invalidation does. A node
// whose renewal saw a newer epoch than it adopted serves nothing cached
// until it adopts it. A mode a node is about to write is emptied on that
// node first (it was not written to while unused), and a mode no longer
// used is emptied to free its memory.

// ModeKey is the cluster's cache mode record in the consistent store.
const ModeKey = Topic + "/mode"

// modeAckPrefix holds each node's acknowledged epoch: modeAckPrefix+name.
const modeAckPrefix = Topic + "/mode-acks/"

// Phases of the mode record.
const (
	PhaseStable   = "stable"
	PhaseDual     = "dual"
	PhaseSwitched = "switched"
)

// Errors of mode switching.
var (
	// ErrSwitching: a switch is already under way.
	ErrSwitching = errors.New("l2cache: a cache mode switch is under way")
	// ErrModeChanged: the cluster's cache mode moved on while a write
	// ran on a node that had not followed it; the write committed, but
	// the cache may serve the old state until it is invalidated again.
	ErrModeChanged = errors.New("l2cache: the cache mode changed during the write")
)

// ModeRecord is the cluster's cache mode: Mode is the mode being run (or
// switched to), From the mode being switched from.
type ModeRecord struct {
	Mode  string `msgpack:"m" json:"mode"`
	From  string `msgpack:"f,omitempty" json:"from,omitempty"`
	Phase string `msgpack:"p" json:"phase"`
	Epoch uint64 `msgpack:"e" json:"epoch"`
}

func (r ModeRecord) String() string {
	if r.Phase == PhaseStable {
		return fmt.Sprintf("%s (epoch %d)", r.Mode, r.Epoch)
	}
	return fmt.Sprintf("%s→%s %s (epoch %d)", r.From, r.Mode, r.Phase, r.Epoch)
}

func (r ModeRecord) next() ModeRecord {
	n := r
	n.Epoch++
	switch r.Phase {
	case PhaseDual:
		n.Phase = PhaseSwitched
	case PhaseSwitched:
		n.Phase, n.From = PhaseStable, ""
	}
	return n
}

func decodeMode(b []byte) (ModeRecord, error) {
	var r ModeRecord
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("l2cache: unreadable cache mode record: %w", err)
	}
	if !validMode(r.Mode) || (r.Phase != PhaseStable && !validMode(r.From)) ||
		(r.Phase != PhaseStable && r.Phase != PhaseDual && r.Phase != PhaseSwitched) {
		return r, fmt.Errorf("l2cache: invalid cache mode record %+v", r)
	}
	return r, nil
}

func validMode(m string) bool {
	return m == cluster.CacheModeLocal || m == cluster.CacheModeDistributed || m == cluster.CacheModeNear
}

// The backends a node may hold, by index.
const (
	beLocal = iota
	beDist
	beNear
	nBackends
)

// uses is the backends a mode reads and writes: NEAR is DISTRIBUTED plus
// its near copies.
func uses(mode string) []int {
	switch mode {
	case cluster.CacheModeDistributed:
		return []int{beDist}
	case cluster.CacheModeNear:
		return []int{beNear, beDist}
	}
	return []int{beLocal}
}

// modeView is a node's adopted mode record: the backend it reads from,
// those it writes to, and the gate that lets the node wait for the
// operations that began under it.
type modeView struct {
	rec   ModeRecord
	read  int   // the backend that answers reads
	write []int // the backends every change goes to (the modes', not uses)

	state    atomic.Int64 // operations in flight; viewRetired once replaced
	drained  chan struct{}
	drainOne sync.Once
}

const viewRetired = 1 << 62

func newView(rec ModeRecord) *modeView {
	v := &modeView{rec: rec, drained: make(chan struct{})}
	target := modeBackend(rec.Mode)
	v.read, v.write = target, []int{target}
	if rec.Phase != PhaseStable {
		from := modeBackend(rec.From)
		if from != target {
			v.write = []int{from, target}
		}
		if rec.Phase == PhaseDual {
			v.read = from
		}
	}
	return v
}

// modeBackend is the backend that implements a mode's operations.
func modeBackend(mode string) int { return uses(mode)[0] }

// touched is the set of backends the view reads or writes, with what
// they use.
func (v *modeView) touched() map[int]bool {
	out := map[int]bool{}
	for _, m := range []string{v.rec.Mode, v.rec.From} {
		if m == "" {
			continue
		}
		for _, b := range uses(m) {
			out[b] = true
		}
	}
	if v.rec.Phase == PhaseStable {
		clear(out)
		for _, b := range uses(v.rec.Mode) {
			out[b] = true
		}
	}
	return out
}

// enter admits an operation under the current view; pair with exit.
func (c *Cache) enter() *modeView {
	for {
		v := c.view.Load()
		if v.state.Add(1)&viewRetired == 0 {
			return v
		}
		v.exit() // replaced meanwhile: use the new one
	}
}

func (v *modeView) exit() {
	if v.state.Add(-1) == viewRetired {
		v.drainOne.Do(func() { close(v.drained) })
	}
}

// retire stops admitting operations; drained closes when the last one
// admitted has exited.
func (v *modeView) retire() {
	if v.state.Or(viewRetired) == 0 {
		v.drainOne.Do(func() { close(v.drained) })
	}
}

// confirm reports whether a write that ran under v reached every backend
// any node may read: see "Why no read is stale" above. While the lease is
// valid the answer is free; otherwise it takes a linearizable read of the
// mode record.
func (c *Cache) confirm(ctx context.Context, v *modeView) error {
	l := c.cfg.Lease
	if l == nil {
		return nil
	}
	if l.Valid() && c.observed.Load() <= v.rec.Epoch+1 {
		return nil
	}
	rec, err := ReadMode(ctx, l.cfg.Store)
	if errors.Is(err, cp.ErrNotFound) {
		return nil // no mode record: the mode has never changed
	}
	if err != nil {
		return fmt.Errorf("%w: written under %v, and the mode record could not be read: %w", ErrModeChanged, v.rec, err)
	}
	if rec.Epoch > v.rec.Epoch+1 {
		return fmt.Errorf("%w: written under %v, the cluster is at %v", ErrModeChanged, v.rec, rec)
	}
	return nil
}

// observe records the mode epoch a lease renewal read: until the node has
// adopted it, it serves nothing cached.
func (c *Cache) observe(kvs []cp.KV) {
	for _, kv := range kvs {
		if kv.Key != ModeKey {
			continue
		}
		rec, err := decodeMode(kv.Value)
		if err != nil {
			continue
		}
		for {
			cur := c.observed.Load()
			if rec.Epoch <= cur || c.observed.CompareAndSwap(cur, rec.Epoch) {
				break
			}
		}
		if kick := c.modeKick.Load(); kick != nil && rec.Epoch > c.view.Load().rec.Epoch {
			select {
			case *kick <- struct{}{}:
			default:
			}
		}
	}
}

// adopt makes rec this node's view if it is newer, creating the backends
// it needs and emptying those it is about to start writing (and those no
// longer used). It returns the view it replaced, to wait for with drain;
// nil if rec was not newer.
func (c *Cache) adopt(rec ModeRecord) (*modeView, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	old := c.view.Load()
	if rec.Epoch <= old.rec.Epoch {
		return nil, nil
	}
	v := newView(rec)
	now, before := v.touched(), map[int]bool{}
	for _, b := range old.write {
		for _, u := range uses(c.modeOf(b)) {
			before[u] = true
		}
	}
	for b := range now {
		if err := c.ensureLocked(b); err != nil {
			return nil, err
		}
	}
	for b := 0; b < nBackends; b++ {
		if c.backends[b] == nil {
			continue
		}
		// Emptied: a backend about to be used that was not written to
		// (its entries may predate writes), and one no longer used.
		switch {
		case now[b] && !before[b]:
			c.retireLocked(b, false)
		case !now[b] && old.touched()[b]:
			c.retireLocked(b, true)
		}
	}
	c.view.Store(v)
	old.retire()
	if old.rec.Mode != rec.Mode || old.rec.Phase != rec.Phase {
		c.cfg.Logger.Info("l2cache: cache mode", "mode", rec.Mode, "from", rec.From, "phase", rec.Phase, "epoch", rec.Epoch)
	}
	return old, nil
}

// modeOf names the mode whose operations backend b implements.
func (c *Cache) modeOf(b int) string {
	return [...]string{cluster.CacheModeLocal, cluster.CacheModeDistributed, cluster.CacheModeNear}[b]
}

// ensureLocked creates backend b and its part of every region.
func (c *Cache) ensureLocked(b int) error {
	if c.backends[b] != nil {
		return nil
	}
	var be backend
	var err error
	switch b {
	case beLocal:
		be, err = newLocalBackend(c)
	case beDist:
		if c.cfg.Node == nil || c.cfg.Keeper == nil {
			return fmt.Errorf("l2cache: %s mode needs Config.Node and Config.Keeper", c.modeOf(b))
		}
		be = newDist(c)
	case beNear:
		if err = c.ensureLocked(beDist); err != nil {
			return err
		}
		be, err = newNear(c, c.backends[beDist].(*dist))
	}
	if err != nil {
		return err
	}
	c.backends[b] = be
	for _, r := range c.regions {
		r.setPart(b, be.region(r))
	}
	return nil
}

// retireLocked empties backend b on this node: every region's part and
// what the backend holds beyond them. unused says that no view of the
// cluster's reads from b any more (the view just adopted does not touch
// it: every node acknowledged the phase before, which reads from
// another), and then b's soft locks go too (lockDropper).
func (c *Cache) retireLocked(b int, unused bool) {
	if b == beNear {
		// NEAR's regions own DISTRIBUTED's too: drop only the copies.
		c.stats.NearDrops[nearDropRetire].Add(1)
		c.backends[beNear].(*near).dropCopies()
		return
	}
	if u, ok := c.backends[b].(interface{ used() }); ok && !unused {
		u.used()
	}
	for _, r := range c.regions {
		if p := r.part(b); p != nil {
			p.drop()
			if l, ok := p.(lockDropper); ok && unused {
				l.dropLocks()
			}
		}
	}
	c.backends[b].reset()
	if l, ok := c.backends[b].(lockDropper); ok && unused {
		l.dropLocks()
	}
}

// lockDropper is a backend, or a backend's part of a region, that holds
// soft locks, which drop and reset keep (a lock outlives a lease reset:
// it still keeps a row that is being written out of the cache). A mode
// no longer used drops them. A write is a lock, a commit and an unlock,
// three operations that may run under different views: a lock taken
// under switched(A→B), which writes to both modes, and released under
// stable(B), which writes to B only, stays held in A. When A is entered
// again within LockTimeout, every read of the key is a miss that loads
// and keeps nothing until the lock expires, and the keys a workload
// writes most are those it reads most: in a 3-node cluster switched
// between NEAR and LOCAL every 12 s, such locks made 3,500–7,800 of
// each NEAR window's reads owner misses, against 80 in a NEAR window
// before any switch (BENCHMARKS.md, "Soft locks left behind by a
// switch"). Unused, the mode's locks guard nothing: no node reads from
// it, and it is emptied again (its floor raised above every ticket and
// entry) before it is read, while a write whose unlock does reach it
// finds no lock and only invalidates.
type lockDropper interface{ dropLocks() }

// drain waits until every operation admitted under old has finished.
func drain(ctx context.Context, old *modeView) error {
	select {
	case <-old.drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ModeStatus is this node's view of the cluster's cache mode.
func (c *Cache) ModeStatus() ModeRecord { return c.view.Load().rec }

// ModeStore is what mode switching needs of the consistent store;
// *cp.Store has it. Get and List must be linearizable.
type ModeStore interface {
	LeaseStore
	Put(ctx context.Context, key string, value []byte, opts ...cp.WriteOption) (uint64, error)
	Watch(prefix string) *cp.Watch
	Status() cp.Status
}

// ModeConfig configures a ModeKeeper.
type ModeConfig struct {
	// Name is this node's member name.
	Name string
	// Store holds the mode record and the acknowledgements.
	Store ModeStore
	// Cache is this node's cache; Lease its read lease (required: a node
	// that does not acknowledge a phase is excluded through it).
	Cache *Cache
	Lease *ReadLease
	// Initial is the mode this node proposes when the cluster has none
	// yet (its --cache-mode); a cluster that has one keeps it.
	Initial string
	// PhaseTimeout is how long the leader waits for a node to acknowledge
	// a phase before it excludes it (default 10 s).
	PhaseTimeout time.Duration
	// Poll is how often the leader checks the acknowledgements while a
	// switch is under way (default 100 ms).
	Poll time.Duration
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
}

// Validate fills defaults and rejects nonsense (a *config.FieldError).
func (c *ModeConfig) Validate() error {
	if c.Initial != "" && !validMode(c.Initial) {
		return config.Invalid("l2cache", "Initial", c.Initial, "local, distributed or near")
	}
	if c.PhaseTimeout < 0 {
		return config.Invalid("l2cache", "PhaseTimeout", c.PhaseTimeout, "a duration of at least 0 (0: the default)")
	}
	fill(&c.PhaseTimeout, 10*time.Second)
	fill(&c.Poll, 100*time.Millisecond)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// ModeKeeper keeps a node on the cluster's cache mode: it adopts every
// phase of the record, acknowledges it once the operations of the phase
// before have finished, and, on the raft leader, moves a switch on to its
// next phase once every lease holder has acknowledged.
type ModeKeeper struct {
	cfg  ModeConfig
	kick chan struct{}

	mu    sync.Mutex
	since map[uint64]time.Time // leader: when each epoch was first seen

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewModeKeeper starts the keeper. Close stops it.
func NewModeKeeper(cfg ModeConfig) (*ModeKeeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Store == nil || cfg.Cache == nil || cfg.Lease == nil || cfg.Name == "" {
		return nil, errors.New("l2cache: ModeConfig.Name, Store, Cache and Lease are required")
	}
	k := &ModeKeeper{cfg: cfg, kick: make(chan struct{}, 1), since: map[uint64]time.Time{}}
	cfg.Cache.modeKick.Store(&k.kick)
	k.ctx, k.cancel = context.WithCancel(context.Background())
	w := cfg.Store.Watch(ModeKey)
	k.wg.Add(1)
	go k.run(w)
	return k, nil
}

// Close stops the keeper. Safe twice.
func (k *ModeKeeper) Close() {
	k.once.Do(k.cancel)
	k.wg.Wait()
}

func (k *ModeKeeper) run(w *cp.Watch) {
	defer k.wg.Done()
	defer w.Close()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case _, ok := <-w.C():
			if !ok {
				return
			}
		case <-k.kick:
		case <-t.C:
		}
		next := k.step()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// step reads the record, adopts and acknowledges it, and on the leader
// moves a switch on. It returns when to look again without a prompt.
func (k *ModeKeeper) step() time.Duration {
	ctx, cancel := context.WithTimeout(k.ctx, k.cfg.PhaseTimeout)
	defer cancel()
	rec, version, err := k.read(ctx)
	if err != nil {
		if k.ctx.Err() == nil {
			k.cfg.Logger.Debug("l2cache: reading the cache mode", "err", err)
		}
		return time.Second
	}
	if err := k.follow(ctx, rec); err != nil {
		if k.ctx.Err() == nil {
			k.cfg.Logger.Warn("l2cache: adopting the cache mode", "record", rec.String(), "err", err)
		}
		return time.Second
	}
	if rec.Phase == PhaseStable {
		return 30 * time.Second
	}
	if k.cfg.Store.Status().Role == "leader" {
		if err := k.advance(ctx, rec, version); err != nil && k.ctx.Err() == nil && !errors.Is(err, cp.ErrVersionMismatch) {
			k.cfg.Logger.Warn("l2cache: moving the cache mode switch on", "record", rec.String(), "err", err)
		}
	}
	return k.cfg.Poll
}

// read returns the record, creating it from Initial if the cluster has
// none.
func (k *ModeKeeper) read(ctx context.Context) (ModeRecord, uint64, error) {
	for {
		kv, err := k.cfg.Store.Get(ctx, ModeKey)
		if errors.Is(err, cp.ErrNotFound) {
			initial := k.cfg.Initial
			if initial == "" {
				initial = k.cfg.Cache.cfg.Mode
			}
			rec := ModeRecord{Mode: initial, Phase: PhaseStable, Epoch: 1}
			b, _ := msgpack.Marshal(&rec)
			if _, err := k.cfg.Store.CompareAndSet(ctx, ModeKey, 0, b); err != nil && !errors.Is(err, cp.ErrVersionMismatch) {
				return rec, 0, err
			}
			continue
		}
		if err != nil {
			return ModeRecord{}, 0, err
		}
		rec, err := decodeMode(kv.Value)
		return rec, kv.Version, err
	}
}

// follow adopts rec, waits for the operations of the view it replaces,
// and acknowledges rec's epoch.
func (k *ModeKeeper) follow(ctx context.Context, rec ModeRecord) error {
	c := k.cfg.Cache
	if cur := c.view.Load().rec; cur.Epoch == 0 && rec.Mode != c.cfg.Mode {
		k.cfg.Logger.Info("l2cache: this node adopts the cluster's cache mode", "mode", rec.Mode, "configured", c.cfg.Mode)
	}
	old, err := c.adopt(rec)
	if err != nil {
		return err
	}
	if old != nil {
		if err := drain(ctx, old); err != nil {
			return fmt.Errorf("waiting for operations of %v: %w", old.rec, err)
		}
	}
	key := modeAckPrefix + k.cfg.Name
	if kv, err := k.cfg.Store.Get(ctx, key); err == nil && string(kv.Value) == strconv.FormatUint(rec.Epoch, 10) {
		return nil
	}
	_, err = k.cfg.Store.Put(ctx, key, []byte(strconv.FormatUint(rec.Epoch, 10)))
	return err
}

// advance moves a switch to its next phase once every lease holder has
// acknowledged the current one, excluding those that have not after
// PhaseTimeout.
func (k *ModeKeeper) advance(ctx context.Context, rec ModeRecord, version uint64) error {
	k.mu.Lock()
	start, ok := k.since[rec.Epoch]
	if !ok {
		start = time.Now()
		k.since = map[uint64]time.Time{rec.Epoch: start}
	}
	k.mu.Unlock()
	missing, err := k.unacked(ctx, rec.Epoch)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		if time.Since(start) < k.cfg.PhaseTimeout {
			return nil
		}
		k.cfg.Logger.Warn("l2cache: excluding members that did not acknowledge the cache mode phase",
			"record", rec.String(), "members", missing)
		ectx, cancel := context.WithTimeout(k.ctx, k.cfg.PhaseTimeout+2*k.cfg.Lease.Duration())
		defer cancel()
		if err := k.cfg.Lease.Exclude(ectx, missing); err != nil {
			return err
		}
	}
	next := rec.next()
	b, _ := msgpack.Marshal(&next)
	if _, err := k.cfg.Store.CompareAndSet(ctx, ModeKey, version, b); err != nil {
		return err
	}
	k.cfg.Logger.Info("l2cache: cache mode switch moved on", "record", next.String())
	return nil
}

// unacked lists the lease holders that have not acknowledged epoch.
func (k *ModeKeeper) unacked(ctx context.Context, epoch uint64) ([]string, error) {
	holders, err := k.cfg.Lease.Holders(ctx)
	if err != nil {
		return nil, err
	}
	acks, err := k.cfg.Store.List(ctx, modeAckPrefix)
	if err != nil {
		return nil, err
	}
	acked := map[string]bool{}
	for _, kv := range acks {
		if e, err := strconv.ParseUint(string(kv.Value), 10, 64); err == nil && e >= epoch {
			acked[kv.Key[len(modeAckPrefix):]] = true
		}
	}
	var missing []string
	for _, h := range holders {
		if !acked[h] {
			missing = append(missing, h)
		}
	}
	slices.Sort(missing)
	return missing, nil
}

// ReadMode returns the cluster's cache mode record (linearizably).
func ReadMode(ctx context.Context, s LeaseStore) (ModeRecord, error) {
	kv, err := s.Get(ctx, ModeKey)
	if err != nil {
		return ModeRecord{}, err
	}
	return decodeMode(kv.Value)
}

// SetMode starts a switch of the cluster's cache mode to mode and waits
// until it is complete (or ctx ends; the switch goes on). Switching to
// the mode already run returns at once; a switch to another mode while
// one is under way is ErrSwitching.
func SetMode(ctx context.Context, s LeaseStore, mode string) (ModeRecord, error) {
	if !validMode(mode) {
		return ModeRecord{}, config.Invalid("l2cache", "mode", mode, "local, distributed or near")
	}
	for {
		kv, err := s.Get(ctx, ModeKey)
		if err != nil {
			return ModeRecord{}, err
		}
		rec, err := decodeMode(kv.Value)
		if err != nil {
			return rec, err
		}
		if rec.Mode == mode {
			if rec.Phase == PhaseStable {
				return rec, nil
			}
			break
		}
		if rec.Phase != PhaseStable {
			return rec, fmt.Errorf("%w: %v", ErrSwitching, rec)
		}
		next := ModeRecord{Mode: mode, From: rec.Mode, Phase: PhaseDual, Epoch: rec.Epoch + 1}
		b, _ := msgpack.Marshal(&next)
		if _, err := s.CompareAndSet(ctx, ModeKey, kv.Version, b); errors.Is(err, cp.ErrVersionMismatch) {
			continue
		} else if err != nil {
			return rec, err
		}
		break
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		rec, err := ReadMode(ctx, s)
		if err == nil && rec.Mode == mode && rec.Phase == PhaseStable {
			return rec, nil
		}
		if err == nil && rec.Mode != mode {
			return rec, fmt.Errorf("%w: the cluster switched to %s meanwhile", ErrSwitching, rec.Mode)
		}
		select {
		case <-ctx.Done():
			return rec, fmt.Errorf("l2cache: the switch to %s is still under way: %w", mode, ctx.Err())
		case <-t.C:
		}
	}
}
