package packcache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
)

var (
	// ErrPushInProgress is wrapped by StoreGenerations.Generation while a
	// push may be moving the repository's refs: nothing may be served
	// from the cache for it or published, so the request bypasses.
	ErrPushInProgress = errors.New("packcache: a push of the repository is in progress")
	// ErrConflict is what a Store's CompareAndSet wraps when the key is
	// not at the expected version.
	ErrConflict = errors.New("packcache: version conflict")
	// ErrPushLost is the cause when a push's marker could not be kept:
	// renewals failed for half a PushLease, or a reader removed it as
	// dead. The push's git must be stopped at once.
	ErrPushLost = errors.New("packcache: push marker lost")
	// ErrTooManyPushes: the repository already has the most pushes in
	// progress a record holds.
	ErrTooManyPushes = errors.New("packcache: too many pushes in progress")
)

// Store is the consistent key/value store that holds generation records:
// a node wires it to the raft store. Both methods must be linearizable.
// Versions grow with every write to any key.
type Store interface {
	// Get returns the key's value and version; nil and 0 when absent.
	Get(ctx context.Context, key string) (value []byte, version uint64, err error)
	// CompareAndSet writes value if the key is at version expect (0: it
	// does not exist) and returns the new version; an error wrapping
	// ErrConflict if it is not.
	CompareAndSet(ctx context.Context, key string, expect uint64, value []byte) (uint64, error)
}

// PushMarker is implemented by Generations that can record a push in
// progress (StoreGenerations). Cache.BeginPush uses it when present.
type PushMarker interface {
	BeginPush(ctx context.Context, repo string) (*Push, error)
}

// StoreGenerationsConfig configures StoreGenerations.
type StoreGenerationsConfig struct {
	// Store holds the records. Required.
	Store Store
	// Prefix starts every key: Prefix+repo. Default "packcache/gen/".
	Prefix string
	// Node names this node in its markers (for people reading the store).
	Node string
	// PushLease bounds how long a push's marker vouches for it without
	// renewal (see the package doc). The pushing node renews every
	// PushLease/6 and stops its git when no renewal has succeeded for
	// PushLease/2; a reader removes a marker it has seen unchanged for
	// PushLease. Default 30 s.
	PushLease time.Duration
	// Clock is the time readers judge markers by. Default time.Now, whose
	// monotonic reading makes the judgement immune to wall-clock steps.
	Clock func() time.Time
	// Logger receives markers removed as dead and lost pushes.
	Logger *slog.Logger
}

func (c *StoreGenerationsConfig) validate() error {
	if c.Store == nil {
		return errors.New("packcache: StoreGenerationsConfig.Store is required")
	}
	return c.Validate()
}

// Validate fills the zero settings with their defaults and rejects
// nonsense (a refused setting is a *config.FieldError); it does not look
// at Store, which NewStoreGenerations needs.
func (c *StoreGenerationsConfig) Validate() error {
	if c.PushLease < 0 {
		return config.Invalid("packcache", "PushLease", c.PushLease, "a duration of at least 0 (0: the default)")
	}
	setDefault(&c.Prefix, "packcache/gen/")
	setDefault(&c.PushLease, 30*time.Second)
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// StoreGenerations keeps each repository's generation and its pushes in
// progress in a Store, under one key per repository: the key's version is
// the generation, its value the markers of the pushes in progress. It
// implements Generations and PushMarker, and is safe for concurrent use.
type StoreGenerations struct {
	cfg StoreGenerationsConfig

	mu   sync.Mutex
	seen map[string]map[string]sighting // repo → marker ID → when first seen at its Seq
}

// sighting is when this node first read a marker at a sequence number.
type sighting struct {
	seq   uint64
	since time.Time
}

// NewStoreGenerations checks cfg and returns a StoreGenerations.
func NewStoreGenerations(cfg StoreGenerationsConfig) (*StoreGenerations, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &StoreGenerations{cfg: cfg, seen: map[string]map[string]sighting{}}, nil
}

func (g *StoreGenerations) key(repo string) string { return g.cfg.Prefix + repo }

// Generation implements Generations. While a push may be moving the
// repository's refs it returns an error wrapping ErrPushInProgress. When
// every marker of the record has been seen unchanged by this node for
// PushLease, their pushes have stopped (see the package doc): it removes
// them, which raises the generation, and returns the new one.
func (g *StoreGenerations) Generation(ctx context.Context, repo string) (uint64, error) {
	value, version, err := g.cfg.Store.Get(ctx, g.key(repo))
	if err != nil {
		return 0, err
	}
	st, err := decodeState(value)
	if err != nil {
		return 0, err
	}
	dead, alive := g.judge(repo, st)
	if len(st.Pushes) == 0 {
		return version, nil
	}
	if alive > 0 {
		return 0, fmt.Errorf("%w: %d push(es) of %s", ErrPushInProgress, alive, repo)
	}
	next, err := g.cfg.Store.CompareAndSet(ctx, g.key(repo), version, st.without(dead...).encode())
	if err != nil {
		return 0, fmt.Errorf("%w: removing the dead markers of %s: %w", ErrPushInProgress, repo, err)
	}
	g.cfg.Logger.Warn("packcache: removed the markers of pushes that stopped renewing them",
		"repo", repo, "markers", dead, "lease", g.cfg.PushLease)
	g.forget(repo, dead...)
	return next, nil
}

// judge updates this node's sightings of the record's markers and returns
// the IDs of those seen at the same Seq for PushLease or more, and how
// many others there are.
func (g *StoreGenerations) judge(repo string, st pushState) (dead []string, alive int) {
	now := g.cfg.Clock() // after the read: no earlier than the write it saw
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(st.Pushes) == 0 {
		delete(g.seen, repo)
		return nil, 0
	}
	old := g.seen[repo]
	cur := make(map[string]sighting, len(st.Pushes))
	for _, m := range st.Pushes {
		s, ok := old[m.ID]
		if !ok || s.seq != m.Seq {
			s = sighting{seq: m.Seq, since: now}
		}
		cur[m.ID] = s
		if now.Sub(s.since) >= g.cfg.PushLease {
			dead = append(dead, m.ID)
		} else {
			alive++
		}
	}
	g.seen[repo] = cur
	return dead, alive
}

func (g *StoreGenerations) forget(repo string, ids ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		delete(g.seen[repo], id)
	}
	if len(g.seen[repo]) == 0 {
		delete(g.seen, repo)
	}
}

// Bump implements Generations: it writes the record again, markers
// unchanged, which raises the generation. A corrupt record is replaced by
// one without markers.
func (g *StoreGenerations) Bump(ctx context.Context, repo string) (uint64, error) {
	v, _, err := g.update(ctx, repo, func(*pushState) error { return nil })
	return v, err
}

// update applies change to the repository's record with compare-and-set,
// reading again after a conflict, until it is written or ctx ends. It
// returns the new version, the record written and the time the
// successful write was sent (no later than its commit). A corrupt record
// is taken as one without markers: it vouches for no push either way.
func (g *StoreGenerations) update(ctx context.Context, repo string, change func(*pushState) error) (uint64, pushState, error) {
	for {
		value, version, err := g.cfg.Store.Get(ctx, g.key(repo))
		if err != nil {
			return 0, pushState{}, err
		}
		st, err := decodeState(value)
		if err != nil {
			g.cfg.Logger.Error("packcache: replacing a corrupt generation record", "repo", repo, "err", err)
			st = pushState{}
		}
		if err := change(&st); err != nil {
			return 0, pushState{}, err
		}
		next, err := g.cfg.Store.CompareAndSet(ctx, g.key(repo), version, st.encode())
		if errors.Is(err, ErrConflict) {
			continue // another write came between: read it and apply again
		}
		return next, st, err
	}
}

// BeginPush implements PushMarker: it records a new marker for the push
// (raising the generation) and returns once the write is committed. The
// returned Push renews the marker until End; its Expired channel closes
// if it cannot. An error means nothing vouches for the push: its git must
// not run.
func (g *StoreGenerations) BeginPush(ctx context.Context, repo string) (*Push, error) {
	id := newMarkerID(g.cfg.Node)
	sent := time.Now()
	_, _, err := g.update(ctx, repo, func(st *pushState) error {
		if len(st.Pushes) >= maxMarkers {
			return fmt.Errorf("%w: %d in %s", ErrTooManyPushes, len(st.Pushes), repo)
		}
		sent = time.Now()
		st.Pushes = append(st.Pushes, marker{ID: id, Node: g.cfg.Node})
		return nil
	})
	if err != nil {
		return nil, err
	}
	k := &keeper{g: g, repo: repo, id: id, lastSent: sent, done: make(chan struct{})}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	p := newPush(repo, k.end)
	k.expire = p.expire
	go k.run()
	return p, nil
}

// newMarkerID is node-<random>: unique without coordination.
func newMarkerID(node string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	if node == "" {
		node = "node"
	}
	if len(node) > 64 {
		node = node[:64]
	}
	return node + "-" + hex.EncodeToString(b[:])
}

// errMarkerGone: a renewal found the marker removed (by a reader that
// judged it dead).
var errMarkerGone = errors.New("the marker was removed as dead")

// keeper renews one push's marker until the push ends, or expires the
// push when a renewal has not succeeded for PushLease/2 after the last
// successful one was sent. Its goroutine ends with the push (end) or
// when it expires it.
type keeper struct {
	g        *StoreGenerations
	repo, id string
	seq      uint64
	lastSent time.Time // send time of the last committed write of the marker
	expire   func(error)
	ctx      context.Context // ends when the push ends
	cancel   context.CancelFunc
	done     chan struct{}
}

func (k *keeper) run() {
	defer close(k.done)
	lease := k.g.cfg.PushLease
	for {
		next := time.NewTimer(time.Until(k.lastSent.Add(lease / 6)))
		select {
		case <-k.ctx.Done():
			next.Stop()
			return
		case <-next.C:
		}
		if err := k.renew(k.lastSent.Add(lease / 2)); err != nil && k.ctx.Err() == nil {
			k.g.cfg.Logger.Error("packcache: push marker lost; stopping the push",
				"repo", k.repo, "marker", k.id, "err", err)
			k.expire(fmt.Errorf("%w: %w", ErrPushLost, err))
			return
		}
	}
}

// renew writes the marker with the next Seq, retrying until killAt (or
// the push's end).
func (k *keeper) renew(killAt time.Time) error {
	ctx, cancel := context.WithDeadline(k.ctx, killAt)
	defer cancel()
	for {
		var sent time.Time
		_, _, err := k.g.update(ctx, k.repo, func(st *pushState) error {
			i := st.index(k.id)
			if i < 0 {
				return errMarkerGone
			}
			sent = time.Now()
			st.Pushes[i].Seq = k.seq + 1
			return nil
		})
		switch {
		case err == nil:
			k.seq++
			k.lastSent = sent
			return nil
		case ctx.Err() != nil, errors.Is(err, errMarkerGone):
			return err
		}
		select { // a failure the store did not retry: try again shortly
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// end stops the renewals and removes the marker (raising the generation
// even if a reader already removed it). It reports whether no other push
// of the repository is recorded.
func (k *keeper) end(ctx context.Context) (bool, error) {
	k.cancel()
	<-k.done
	_, st, err := k.g.update(ctx, k.repo, func(st *pushState) error {
		*st = st.without(k.id)
		return nil
	})
	return err == nil && len(st.Pushes) == 0, err
}

// Push is a push in progress, from Cache.BeginPush (or a PushMarker) to
// End. Its owner must call End once git has exited, whatever happened.
type Push struct {
	repo    string
	expired chan struct{}
	endFn   func(context.Context) (bool, error)
	after   func() // runs after endFn, whatever its outcome

	mu    sync.Mutex
	cause error
	once  sync.Once
	idle  bool
	err   error
}

func newPush(repo string, end func(context.Context) (bool, error)) *Push {
	return &Push{repo: repo, expired: make(chan struct{}), endFn: end}
}

// Expired is closed when nothing vouches for the push any more: its
// marker could not be renewed in time. The push's git must be stopped at
// once (before PushLease/2 after the last renewal: that is the bound the
// readers rely on). Cause says why.
func (p *Push) Expired() <-chan struct{} { return p.expired }

// Cause is why Expired closed, or nil.
func (p *Push) Cause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cause
}

func (p *Push) expire(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cause == nil {
		p.cause = err
		close(p.expired)
	}
}

// End records that the push's git has exited: the marker goes and the
// generation rises, so nothing cached during the push is served after it.
// It reports whether no other push of the repository is known to be in
// progress (the quarantine sweep needs that). Safe to call more than
// once; later calls return the first one's results. When it fails, the
// marker stays until readers remove it as dead (PushLease), and the
// repository is not cached until then.
func (p *Push) End(ctx context.Context) (idle bool, err error) {
	p.once.Do(func() {
		p.idle, p.err = p.endFn(ctx)
		if p.err != nil {
			p.err = fmt.Errorf("packcache: recording the end of a push of %q: %w", p.repo, p.err)
		}
		if p.after != nil {
			p.after()
		}
	})
	return p.idle, p.err
}
