package l2cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/beat"
	"github.com/shoal-dev/shoal/internal/config"
)

// The read lease: how a node knows it has not missed an invalidation it
// cannot hear about. The argument is in the package doc ("Never stale
// under faults"); this file is its mechanism.

// MembersPrefix is where the lease registry lives in the consistent store:
// one record per node that has ever cached, MembersPrefix+name.
const MembersPrefix = Topic + "/members/"

// leasePrefix is what a renewal reads, in one linearizable List: the
// registry and the partition table, so that a renewal also brings this
// node's table up to date.
const leasePrefix = Topic + "/"

// ErrExcludeFailed: a synchronous invalidation could not be acknowledged
// by some members and they could not be excluded from serving in time
// (the consistent store was unreachable). The write itself has committed.
var ErrExcludeFailed = errors.New("l2cache: could not exclude unresponsive members")

// LeaseStore is what the lease needs of the consistent store; *cp.Store
// has it. List and Get must be linearizable.
type LeaseStore interface {
	List(ctx context.Context, prefix string) ([]cp.KV, error)
	Get(ctx context.Context, key string) (cp.KV, error)
	CompareAndSet(ctx context.Context, key string, expect uint64, value []byte, opts ...cp.WriteOption) (uint64, error)
}

// patientLister is a LeaseStore that can confirm a linearizable List by
// the heartbeats its leader sends anyway, for a reader that can wait up
// to a heartbeat interval (*cp.Store's ListPatient). Renewals that are
// merely due use it: on an idle cluster, each renewal's own leadership
// check sent a heartbeat to every follower.
type patientLister interface {
	ListPatient(ctx context.Context, prefix string) ([]cp.KV, error)
}

// memberRecord is a node's entry in the registry. Only the node itself
// activates its record (a new Gen); anyone may exclude it.
type memberRecord struct {
	Gen      uint64 `msgpack:"g"`
	Excluded bool   `msgpack:"x"`
	// Resigned: the node excluded its own record as it closed, after it
	// had stopped serving, so no write need wait for its lease.
	Resigned bool `msgpack:"r,omitempty"`
}

// LeaseConfig configures a ReadLease.
type LeaseConfig struct {
	// Name is this node's member name.
	Name string
	// Store is the consistent store holding the registry.
	Store LeaseStore
	// Duration is the lease: a renewal read sent at time s lets this node
	// serve cached reads until s+Duration; a writer that excludes this
	// node waits Duration (plus a margin for clock rates) after the
	// exclusion commits before it acknowledges. Default 2 s.
	Duration time.Duration
	// RenewEvery is how often the lease is renewed (default Duration/4).
	RenewEvery time.Duration
	// Now is the clock (default time.Now). Only differences of its
	// readings are used, so a monotonic clock is all it needs.
	Now func() time.Time
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
}

// DefaultLeaseConfig is the lease's defaults: a 2 s lease renewed every
// 500 ms. Validate fills the zero settings from it.
func DefaultLeaseConfig() LeaseConfig { return LeaseConfig{Duration: 2 * time.Second} }

func (c *LeaseConfig) validate() error {
	if c.Name == "" || strings.ContainsRune(c.Name, '/') {
		return fmt.Errorf("l2cache: lease: invalid member name %q", c.Name)
	}
	if c.Store == nil {
		return errors.New("l2cache: lease: LeaseConfig.Store is required")
	}
	return c.Validate()
}

// Validate fills the zero settings from DefaultLeaseConfig (RenewEvery:
// a quarter of Duration) and rejects nonsense (a refused setting is a
// *config.FieldError). It does not look at Name and Store, which
// NewReadLease checks.
func (c *LeaseConfig) Validate() error {
	if c.Duration < 0 {
		return config.Invalid("l2cache", "Duration", c.Duration, "a lease of at least 0 (0: the default)")
	}
	fill(&c.Duration, DefaultLeaseConfig().Duration)
	fill(&c.RenewEvery, c.Duration/4)
	if c.RenewEvery < 0 || c.RenewEvery >= c.Duration {
		return config.Invalid("l2cache", "RenewEvery", c.RenewEvery, fmt.Sprintf("less than the lease (%v)", c.Duration))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// ReadLease lets a node serve cached state only while it can vouch that no
// write was acknowledged without it: while its record in the registry is
// active and was read, linearizably, less than Duration ago. Its methods
// are safe for concurrent use.
type ReadLease struct {
	cfg  LeaseConfig
	base time.Time // readings are kept as durations since base
	// mono: the clock is time.Now, so a reading is time.Since(base), the
	// monotonic clock alone (Now reads the wall clock too, and every
	// cached read reads the lease's clock: Valid).
	mono bool

	// from and until bound when cached state may be served, in
	// nanoseconds since base: from ends the probation after an
	// activation, until is the renewal's send time plus Duration.
	from, until atomic.Int64

	mu       sync.Mutex
	gen      uint64          // the Gen this process activated; 0: none yet
	holders  map[string]bool // active members as of viewSent
	viewSent int64           // send time of the read that gave holders
	// excluded is, for each member this node has seen excluded, the
	// generation excluded and when this node first knew it (a reading
	// after the exclusion committed): the member may serve until a lease
	// after the commit, so every write must reach it or wait that out
	// (Holders, Exclude).
	excluded  map[string]exclusion
	onReset   []func(ResetReason)
	observers []func([]cp.KV)

	kick      chan struct{}
	stop      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	renewals, lapses, exclusions, resets atomic.Uint64
}

// exclusion is a member's record seen excluded: at generation gen, known
// at seen (this node's clock, at or after the commit).
type exclusion struct {
	gen  uint64
	seen int64
}

// NewReadLease starts renewing. Close stops it.
func NewReadLease(cfg LeaseConfig) (*ReadLease, error) {
	mono := cfg.Now == nil
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &ReadLease{cfg: cfg, base: cfg.Now(), mono: mono, holders: map[string]bool{}, excluded: map[string]exclusion{},
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
	l.until.Store(-1)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.run()
	return l, nil
}

// ResetReason says why the lease calls its OnReset functions.
type ResetReason string

const (
	// ResetActivated: this node (re)activated its record — at start, or
	// after a writer excluded it. Writes may have been acknowledged
	// without it: everything cached must go.
	ResetActivated ResetReason = "activated"
	// ResetLapsed: the lease ran out before a renewal, but nobody excluded
	// this node, so every write that needed its acknowledgement got it.
	// Only state kept by unacknowledged (asynchronous) messages is in
	// doubt.
	ResetLapsed ResetReason = "lapsed"
)

// OnReset registers f to be called whenever this node regains its lease
// after having been without one, with the reason: f must make the node
// forget every cached state it can no longer vouch for, so that nothing
// cached before is served again. f runs on the lease's goroutine before
// the lease becomes valid; it must not block.
func (l *ReadLease) OnReset(f func(ResetReason)) {
	l.mu.Lock()
	l.onReset = append(l.onReset, f)
	l.mu.Unlock()
}

// Observe registers f to receive every renewal's linearizable read of the
// cache's keys in the consistent store (the registry and the partition
// table), before the renewal takes effect. f must not block.
func (l *ReadLease) Observe(f func([]cp.KV)) {
	l.mu.Lock()
	l.observers = append(l.observers, f)
	l.mu.Unlock()
}

// Duration is the lease's length.
func (l *ReadLease) Duration() time.Duration { return l.cfg.Duration }

// outlast is how long after a moment on this node's clock a lease that
// another node renewed before that moment may still run, measured on
// this node's clock: Duration, and a margin for the two clocks' rates
// (an eighth of it, and 10 ms). Each node measures only its own
// intervals, so the clocks need not agree on the time, but one that runs
// fast ends a wait of Duration before the other's lease of Duration has
// ended. Exclude, an activation's probation and a new owner's wait
// (dist) all wait this long.
func (l *ReadLease) outlast() time.Duration {
	return l.cfg.Duration + l.cfg.Duration/8 + 10*time.Millisecond
}

func (l *ReadLease) now() int64 {
	if l.mono {
		return int64(time.Since(l.base))
	}
	return int64(l.cfg.Now().Sub(l.base))
}

// Valid reports whether this node may serve (and cache) state now. It is
// cheap: two atomic loads and a clock reading.
func (l *ReadLease) Valid() bool {
	if l == nil {
		return true
	}
	now := l.now()
	return now >= l.from.Load() && now < l.until.Load()
}

// ValidFor is how much longer the lease stays valid without another
// renewal: 0 when it is not valid now. A loop that must act when the
// lease runs out can sleep this long instead of polling Valid.
func (l *ReadLease) ValidFor() time.Duration {
	if l == nil {
		return time.Duration(math.MaxInt64)
	}
	now := l.now()
	if now < l.from.Load() {
		return 0
	}
	return time.Duration(max(l.until.Load()-now, 0))
}

// ValidAt reports whether the lease is valid at t, a reading of the
// lease's clock.
func (l *ReadLease) validAt(t time.Time) bool {
	now := int64(t.Sub(l.base))
	return now >= l.from.Load() && now < l.until.Load()
}

// Close stops renewing and gives the lease up: the record is excluded
// (best effort, bounded), so that writers stop waiting for this node's
// acknowledgements at once instead of after a timeout. Safe twice.
func (l *ReadLease) Close() {
	l.closeOnce.Do(func() {
		close(l.stop)
		l.wg.Wait()
		l.until.Store(-1)
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Duration)
		defer cancel()
		if _, err := l.exclude(ctx, l.cfg.Name); err != nil {
			l.cfg.Logger.Debug("l2cache: lease: could not resign", "err", err)
		}
		l.cancel()
	})
}

func (l *ReadLease) run() {
	defer l.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		due := false
		select {
		case <-l.stop:
			return
		case <-t.C:
			due = true
		case <-l.kick:
		}
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.Duration/2)
		// A renewal that is merely due, while the lease has more than half
		// of its length left, can wait for the leader's heartbeats to
		// confirm it (patientLister); one asked for, or with the lease
		// running out, is confirmed at once.
		err := l.renew(ctx, due && l.ValidFor() > l.cfg.Duration/2)
		cancel()
		next := l.cfg.RenewEvery
		if err != nil && l.ctx.Err() == nil {
			l.cfg.Logger.Debug("l2cache: lease: renewal failed", "err", err)
			next /= 4 // try again soon: the lease is running out
		}
		// On the process's beat: the next renewal is sent at most next
		// after this one was, at an instant the node's other periodic
		// chores share, so that an idle node wakes once for all of them.
		t.Reset(beat.Until(next))
	}
}

// renew reads the registry linearizably and extends the lease, activating
// this node's record first when it is missing, excluded, or not the one
// this process activated.
func (l *ReadLease) renew(ctx context.Context, patient bool) error {
	sent := l.now()
	list := l.cfg.Store.List
	if p, ok := l.cfg.Store.(patientLister); ok && patient {
		list = p.ListPatient
	}
	kvs, err := list(ctx, leasePrefix)
	if err != nil {
		return err
	}
	l.mu.Lock()
	observers := slices.Clone(l.observers)
	l.mu.Unlock()
	for _, f := range observers {
		f(kvs)
	}
	mine, version, holders, excluded := l.parse(kvs)
	l.mu.Lock()
	l.holders, l.viewSent = holders, sent
	l.sawExcludedLocked(holders, excluded, l.now())
	gen := l.gen
	l.mu.Unlock()
	if mine == nil || mine.Excluded || mine.Gen != gen {
		return l.activate(ctx, mine, version)
	}
	l.renewals.Add(1)
	if until := l.until.Load(); until <= sent {
		// The lease lapsed (or was never valid) before this read was
		// sent: what the cache holds may predate writes this node did not
		// hear about. Forget it before serving again.
		if until >= 0 {
			l.lapses.Add(1)
			l.cfg.Logger.Info("l2cache: read lease lapsed and renewed", "member", l.cfg.Name, "late", time.Duration(sent-until))
			l.reset(ResetLapsed)
		}
	}
	l.until.Store(sent + int64(l.cfg.Duration))
	return nil
}

// activate makes this node's record active with a new generation, after
// dropping the cache. It serves nothing until Duration (and the margin
// for clock rates, outlast) after the activation committed: by then every
// writer with a current view of the registry counts it among those a
// write must reach, and every other node whose lease is valid renewed
// after the activation (NEAR's holders drop the copies a restarted owner
// gave them then: near.observeGens).
func (l *ReadLease) activate(ctx context.Context, mine *memberRecord, version uint64) error {
	l.until.Store(-1)
	l.reset(ResetActivated)
	next := memberRecord{Gen: 1}
	if mine != nil {
		next.Gen = mine.Gen + 1
	}
	l.mu.Lock()
	next.Gen = max(next.Gen, l.gen+1)
	l.mu.Unlock()
	b, err := msgpack.Marshal(&next)
	if err != nil {
		return err
	}
	if _, err := l.cfg.Store.CompareAndSet(ctx, MembersPrefix+l.cfg.Name, version, b); err != nil {
		return fmt.Errorf("activating %s: %w", l.cfg.Name, err)
	}
	committed := l.now()
	switch {
	case mine != nil && mine.Resigned:
		l.cfg.Logger.Info("l2cache: this node's record was resigned by its previous process; activated again", "member", l.cfg.Name, "generation", next.Gen)
	case mine != nil && mine.Excluded:
		l.cfg.Logger.Info("l2cache: this node was excluded by a writer; cached state dropped", "member", l.cfg.Name, "generation", next.Gen)
	}
	l.mu.Lock()
	l.gen = next.Gen
	l.holders[l.cfg.Name] = true
	l.mu.Unlock()
	l.from.Store(committed + int64(l.outlast()))
	l.kickSoon()
	return nil
}

func (l *ReadLease) kickSoon() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *ReadLease) reset(why ResetReason) {
	l.resets.Add(1)
	l.mu.Lock()
	fs := slices.Clone(l.onReset)
	l.mu.Unlock()
	for _, f := range fs {
		f(why)
	}
}

// parse finds this node's record, the active members and the excluded
// ones (with their generations) in a read of the registry.
func (l *ReadLease) parse(kvs []cp.KV) (mine *memberRecord, version uint64, holders map[string]bool, excluded map[string]uint64) {
	holders, excluded = map[string]bool{}, map[string]uint64{}
	for _, kv := range kvs {
		name, ok := strings.CutPrefix(kv.Key, MembersPrefix)
		if !ok {
			continue
		}
		var rec memberRecord
		if err := msgpack.Unmarshal(kv.Value, &rec); err != nil {
			l.cfg.Logger.Warn("l2cache: lease: unreadable registry record", "key", kv.Key, "err", err)
			continue
		}
		if rec.Excluded {
			if !rec.Resigned {
				excluded[name] = rec.Gen
			}
		} else {
			holders[name] = true
		}
		if name == l.cfg.Name {
			mine, version = &rec, kv.Version
		}
	}
	return mine, version, holders, excluded
}

// sawExcludedLocked records the exclusions a read of the registry that
// returned at at showed, keeping the earliest moment this node knew of
// each (an exclusion of another generation is a new one), and forgets
// those of members the read showed active again. l.mu is held.
func (l *ReadLease) sawExcludedLocked(active map[string]bool, excluded map[string]uint64, at int64) {
	for m, gen := range excluded {
		if e, ok := l.excluded[m]; !ok || e.gen != gen {
			l.excluded[m] = exclusion{gen: gen, seen: at}
		}
	}
	for m := range active {
		delete(l.excluded, m)
	}
}

// Holders returns the members a synchronous write must reach, or
// exclude and wait out (Exclude): those whose records are active, from
// the latest renewal if it is less than Duration old, else from a fresh
// linearizable read; and those this node saw excluded less than a lease
// (and the margin for clock rates, outlast) ago. A member activated after
// that read serves nothing before Duration has passed since its
// activation; a member excluded may serve until a lease after the
// exclusion committed, which no writer waited out but the one that
// excluded it — a write that skipped it as excluded could be acknowledged
// while it still served the state the write changed. So a writer that
// reaches every holder returned here (or excludes it) reaches every node
// that could serve what the write changed.
func (l *ReadLease) Holders(ctx context.Context) ([]string, error) {
	l.mu.Lock()
	fresh := l.now() < l.viewSent+int64(l.cfg.Duration) && l.viewSent > 0
	var out []string
	if fresh {
		out = l.holdersLocked(l.holders)
	}
	l.mu.Unlock()
	if fresh {
		return out, nil
	}
	sent := l.now()
	kvs, err := l.cfg.Store.List(ctx, leasePrefix)
	if err != nil {
		return nil, err
	}
	_, _, holders, excluded := l.parse(kvs)
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent > l.viewSent {
		l.holders, l.viewSent = holders, sent
	}
	l.sawExcludedLocked(holders, excluded, l.now())
	return l.holdersLocked(holders), nil
}

// holdersLocked is active and the members excluded less than outlast ago,
// sorted. l.mu is held.
func (l *ReadLease) holdersLocked(active map[string]bool) []string {
	out := make([]string, 0, len(active)+len(l.excluded))
	for m := range active {
		out = append(out, m)
	}
	now := l.now()
	for m, e := range l.excluded {
		if !active[m] && now < e.seen+int64(l.outlast()) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

// Exclude makes sure none of members serves cached state that a write
// which did not reach them could have changed: each one's record is
// excluded in the consistent store, and Exclude returns only when every
// lease such a member could still hold has run out — Duration, plus a
// margin for clock rates, after the exclusion was seen committed. An
// excluded member drops its cache and activates again before it serves.
// The cost to the writer is one store write per member and the wait.
func (l *ReadLease) Exclude(ctx context.Context, members []string) error {
	var until int64
	for _, m := range members {
		if m == l.cfg.Name {
			continue
		}
		at, err := l.exclude(ctx, m)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrExcludeFailed, m, err)
		}
		until = max(until, at)
	}
	if until == 0 {
		return nil
	}
	l.exclusions.Add(uint64(len(members)))
	wait := time.Duration(until + int64(l.outlast()) - l.now())
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting out their leases: %w", ErrExcludeFailed, ctx.Err())
	}
}

// exclude marks m's record excluded (resigned, when m is this node) and
// returns when it saw that so (0 if m has no record, or resigned: it
// serves nothing). If another writer excluded m
// first, the time this node first learnt so stands in for the commit.
func (l *ReadLease) exclude(ctx context.Context, m string) (int64, error) {
	key := MembersPrefix + m
	for {
		kv, err := l.cfg.Store.Get(ctx, key)
		if errors.Is(err, cp.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		var rec memberRecord
		if err := msgpack.Unmarshal(kv.Value, &rec); err != nil {
			return 0, fmt.Errorf("unreadable registry record %s: %w", key, err)
		}
		if rec.Excluded && rec.Resigned {
			return 0, nil // it stopped serving before it resigned
		}
		excludedHere := !rec.Excluded
		if excludedHere {
			rec.Excluded, rec.Resigned = true, m == l.cfg.Name
			b, err := msgpack.Marshal(&rec)
			if err != nil {
				return 0, err
			}
			_, err = l.cfg.Store.CompareAndSet(ctx, key, kv.Version, b)
			if errors.Is(err, cp.ErrVersionMismatch) {
				continue
			}
			if err != nil {
				return 0, err
			}
			if rec.Resigned {
				l.cfg.Logger.Info("l2cache: lease: resigned this node's record", "member", m)
			} else {
				l.cfg.Logger.Info("l2cache: lease: excluded a member's record", "member", m, "by", l.cfg.Name)
			}
		}
		at := l.now()
		l.mu.Lock()
		delete(l.holders, m)
		if e, ok := l.excluded[m]; ok && e.gen == rec.Gen && !excludedHere {
			at = min(at, e.seen)
		} else {
			l.excluded[m] = exclusion{gen: rec.Gen, seen: at}
		}
		l.mu.Unlock()
		return at, nil
	}
}

// LeaseStats are the lease's counters.
type LeaseStats struct {
	Valid      bool   `json:"valid"`
	Renewals   uint64 `json:"renewals"`
	Lapses     uint64 `json:"lapses"`
	Resets     uint64 `json:"resets"`
	Exclusions uint64 `json:"exclusions"`
}

// Stats returns the lease's counters.
func (l *ReadLease) Stats() LeaseStats {
	if l == nil {
		return LeaseStats{Valid: true}
	}
	return LeaseStats{Valid: l.Valid(), Renewals: l.renewals.Load(), Lapses: l.lapses.Load(),
		Resets: l.resets.Load(), Exclusions: l.exclusions.Load()}
}
