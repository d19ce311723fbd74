package l2cache

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// manualClock is a clock the test moves.
type manualClock struct {
	base time.Time
	at   atomic.Int64
}

func (c *manualClock) now() time.Time         { return c.base.Add(time.Duration(c.at.Load())) }
func (c *manualClock) set(d time.Duration)    { c.at.Store(int64(d)) }
func (c *manualClock) elapsed() time.Duration { return time.Duration(c.at.Load()) }

// leaseGen is the generation l activated (0: none yet).
func leaseGen(l *ReadLease) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// gatedStore is the consistent store with a gate on List: while it is
// shut, renewals fail (after their deadline) as if the store were out of
// reach.
type gatedStore struct {
	LeaseStore
	mu   sync.Mutex
	shut bool
}

func (s *gatedStore) setShut(v bool) { s.mu.Lock(); s.shut = v; s.mu.Unlock() }

func (s *gatedStore) List(ctx context.Context, prefix string) ([]cp.KV, error) {
	s.mu.Lock()
	shut := s.shut
	s.mu.Unlock()
	if shut {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.LeaseStore.List(ctx, prefix)
}

// Each node measures only its own intervals, and clocks run at slightly
// different rates. A node that activates its record again serves nothing
// until every lease another node renewed before the activation has run
// out — on that node's clock, which may be slower. Here B's clock runs at
// 0.9 of A's: B's last renewal read the registry just before A's
// activation committed, and B is then cut from the store. When A's
// probation ends on A's clock, B's lease must have ended on B's.
func TestLeaseProbationOutlastsSlowerClock(t *testing.T) {
	const d = 400 * time.Millisecond
	members := clustertest.StartWithStores(t, memnet.New(43), 1)
	store := members[0].Store
	start := time.Now()
	ca, cb := &manualClock{base: start}, &manualClock{base: start}
	a, err := NewReadLease(LeaseConfig{Name: "a", Store: store, Duration: d, Now: ca.now, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	gb := &gatedStore{LeaseStore: store}
	b, err := NewReadLease(LeaseConfig{Name: "b", Store: gb, Duration: d, Now: cb.now, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	// Both activated at 0 on frozen clocks; a while later both are valid.
	testkit.Eventually(t, 20*time.Second, "both records active", func() bool {
		kvs, err := store.List(context.Background(), MembersPrefix)
		return err == nil && len(kvs) == 2 && leaseGen(a) > 0 && leaseGen(b) > 0
	})
	tg := 10 * d
	ca.set(tg)
	cb.set(tg)
	testkit.Eventually(t, 20*time.Second, "both leases valid", func() bool { return a.Valid() && b.Valid() })
	// B's last renewal was sent at tg (its clock is frozen); now it
	// reaches the store no more.
	gb.setShut(true)
	t.Cleanup(func() { gb.setShut(false) })
	if !b.Valid() {
		t.Fatal("B's lease ended before the clocks moved")
	}
	// A activates its record again (as a new process would), at tg.
	bumpGen(t, store, "a")
	testkit.Eventually(t, 20*time.Second, "A to activate again", func() bool { return a.from.Load() > int64(tg) })
	from := time.Duration(a.from.Load())
	// The moment A may first serve, and B's clock then.
	ca.set(from)
	cb.set(tg + (from-tg)*9/10)
	if b.Valid() {
		t.Fatalf("A's probation ended %v after its activation on its clock, when B's clock (0.9 of A's rate) had moved %v: B still serves under the lease it renewed before the activation (%v)",
			from-tg, cb.elapsed()-tg, d)
	}
}

// bumpGen moves node name's registry record to a later generation, as a
// new process of that node would, and returns the record as written.
func bumpGen(t *testing.T, store LeaseStore, name string) memberRecord {
	t.Helper()
	ctx := context.Background()
	kv, err := store.Get(ctx, MembersPrefix+name)
	if err != nil {
		t.Fatal(err)
	}
	var rec memberRecord
	if err := msgpack.Unmarshal(kv.Value, &rec); err != nil {
		t.Fatal(err)
	}
	rec.Gen += 100
	b, _ := msgpack.Marshal(&rec)
	if _, err := store.CompareAndSet(ctx, kv.Key, kv.Version, b); err != nil {
		t.Fatal(err)
	}
	return rec
}

// patientCounter counts which kind of List a lease's renewals use.
type patientCounter struct {
	LeaseStore
	patient, plain atomic.Int64
	p              patientLister
}

func (s *patientCounter) List(ctx context.Context, prefix string) ([]cp.KV, error) {
	s.plain.Add(1)
	return s.LeaseStore.List(ctx, prefix)
}

func (s *patientCounter) ListPatient(ctx context.Context, prefix string) ([]cp.KV, error) {
	s.patient.Add(1)
	return s.p.ListPatient(ctx, prefix)
}

// A renewal that is merely due, with more than half the lease left, waits
// for the leader's heartbeats (ListPatient); the first renewal, one
// asked for, and one with the lease running out are confirmed at once.
func TestLeaseDueRenewalsArePatient(t *testing.T) {
	members := clustertest.StartWithStores(t, memnet.New(44), 1)
	store := members[0].Store
	pc := &patientCounter{LeaseStore: store, p: store}
	clk := &manualClock{base: time.Now()}
	const d = 2 * time.Second
	l, err := NewReadLease(LeaseConfig{Name: "a", Store: pc, Duration: d, RenewEvery: 20 * time.Millisecond, Now: clk.now, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	// Through its probation after the activation the lease is not valid:
	// every renewal is confirmed at once.
	testkit.Eventually(t, 20*time.Second, "the record to be activated", func() bool { return l.from.Load() > 0 })
	if n := pc.patient.Load(); n != 0 {
		t.Fatalf("%d patient renewals before the lease was valid", n)
	}
	// Past it, with the clock held, every renewal leaves the lease its
	// whole length: due renewals are patient.
	clk.set(10 * d)
	testkit.Eventually(t, 20*time.Second, "the lease to be valid", l.Valid)
	testkit.Eventually(t, 20*time.Second, "due renewals to be patient", func() bool { return pc.patient.Load() >= 5 })
	// Asked for: at once.
	plain := pc.plain.Load()
	l.kickSoon()
	testkit.Eventually(t, 20*time.Second, "a kicked renewal to use List", func() bool { return pc.plain.Load() > plain })
	// Running out (a quarter of the lease left): at once.
	plain = pc.plain.Load()
	clk.set(10*d + d*3/4)
	testkit.Eventually(t, 20*time.Second, "a renewal with a quarter of the lease left to use List", func() bool { return pc.plain.Load() > plain })
}

// A member one writer excluded may serve until a lease after the
// exclusion committed: it learns of it only at its next renewal. Only the
// writer that excluded it waits that out, so every other write in the
// meantime — through the same node or another, whose view of the registry
// shows the member excluded — must still reach it or wait: Holders lists
// it until a lease (and the margin for clock rates) after the writer saw
// the exclusion, and no longer. (The chaos checker found this: after a
// partition healed, the isolated node's pending writes excluded the
// others, and its next writes were acknowledged at once, while those
// others still served their caches.)
func TestLeaseHoldersKeepExcludedUntilTheirLeaseRunsOut(t *testing.T) {
	const d = 400 * time.Millisecond
	members := clustertest.StartWithStores(t, memnet.New(44), 1)
	store := members[0].Store
	clock := &manualClock{base: time.Now()}
	gb := &gatedStore{LeaseStore: store}
	leases := map[string]*ReadLease{}
	for _, name := range []string{"a", "b", "c"} {
		var s LeaseStore = store
		if name == "b" {
			s = gb
		}
		l, err := NewReadLease(LeaseConfig{Name: name, Store: s, Duration: d, Now: clock.now, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		leases[name] = l
	}
	a, b, c := leases["a"], leases["b"], leases["c"]
	// All three activate at 0 on the frozen clock, and serve from tg on.
	testkit.Eventually(t, 20*time.Second, "every record active", func() bool {
		return leaseGen(a) > 0 && leaseGen(b) > 0 && leaseGen(c) > 0
	})
	tg := 10 * d
	clock.set(tg)
	testkit.Eventually(t, 20*time.Second, "every lease valid, and a's and c's views showing all three", func() bool {
		for _, w := range []*ReadLease{a, c} {
			w.mu.Lock()
			n := len(w.holders)
			w.mu.Unlock()
			if n != 3 {
				return false
			}
		}
		return a.Valid() && b.Valid() && c.Valid()
	})
	// B's last renewal was sent at tg; it reaches the store no more, so it
	// does not learn that it is excluded, and serves until tg+d.
	gb.setShut(true)
	t.Cleanup(func() { gb.setShut(false) })
	excluded := make(chan error, 1)
	go func() { excluded <- a.Exclude(context.Background(), []string{"b"}) }()
	testkit.Eventually(t, 20*time.Second, "c's renewal to see b excluded", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.holders) == 2 && !c.holders["b"]
	})
	holders := func(w *ReadLease) []string {
		t.Helper()
		hs, err := w.Holders(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return hs
	}
	clock.set(tg + d/2)
	if !b.Valid() {
		t.Fatal("b's lease ended before it ran out")
	}
	for name, w := range map[string]*ReadLease{"a (which excluded b)": a, "c": c} {
		if hs := holders(w); !slices.Contains(hs, "b") {
			t.Errorf("%s: holders %v while b still serves under its lease: a write through it would skip b", name, hs)
		}
	}
	// A's Exclude waited out b's lease on the clock it saw the exclusion.
	if err := <-excluded; err != nil {
		t.Fatal(err)
	}
	clock.set(tg + a.outlast() + time.Millisecond)
	if b.Valid() {
		t.Fatal("b still serves a lease after its exclusion")
	}
	for name, w := range map[string]*ReadLease{"a": a, "c": c} {
		if hs := holders(w); slices.Contains(hs, "b") {
			t.Errorf("%s: holders %v: b, excluded and past its lease, is still waited for", name, hs)
		}
	}
}

// A node that closes stops serving, then excludes its own record as
// resigned: no write waits for it, neither for an acknowledgement nor for
// its lease to run out.
func TestLeaseResignedIsNotWaitedFor(t *testing.T) {
	const d = 2 * time.Second
	members := clustertest.StartWithStores(t, memnet.New(45), 1)
	store := members[0].Store
	var leases []*ReadLease
	for _, name := range []string{"a", "c"} {
		l, err := NewReadLease(LeaseConfig{Name: name, Store: store, Duration: d, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		leases = append(leases, l)
	}
	a, c := leases[0], leases[1]
	ctx := context.Background()
	testkit.Eventually(t, 20*time.Second, "a to see c active", func() bool {
		hs, err := a.Holders(ctx)
		return err == nil && slices.Contains(hs, "c")
	})
	c.Close()
	testkit.Eventually(t, 20*time.Second, "a's renewals to see c resigned", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.holders) == 1
	})
	if hs, err := a.Holders(ctx); err != nil || slices.Contains(hs, "c") {
		t.Fatalf("holders %v (%v): a resigned member is waited for", hs, err)
	}
	start := time.Now()
	if err := a.Exclude(ctx, []string{"c"}); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited >= d {
		t.Fatalf("Exclude of a resigned member waited %v, a lease", waited)
	}
}
