package packcache

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

// faultyStore is one node's handle on a shared Store that can die: after
// kill every call fails; while blocked every call waits for its context.
type faultyStore struct {
	Store
	mu      sync.Mutex
	dead    bool
	blocked bool
	writes  int
}

var errDeadNode = errors.New("test: this node's store handle is dead")

func (f *faultyStore) check(ctx context.Context) error {
	f.mu.Lock()
	dead, blocked := f.dead, f.blocked
	f.mu.Unlock()
	if blocked {
		<-ctx.Done()
		return ctx.Err()
	}
	if dead {
		return errDeadNode
	}
	return nil
}

func (f *faultyStore) set(dead, blocked bool) {
	f.mu.Lock()
	f.dead, f.blocked = dead, blocked
	f.mu.Unlock()
}

func (f *faultyStore) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := f.check(ctx); err != nil {
		return nil, 0, err
	}
	return f.Store.Get(ctx, key)
}

func (f *faultyStore) CompareAndSet(ctx context.Context, key string, expect uint64, value []byte) (uint64, error) {
	if err := f.check(ctx); err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.writes++
	f.mu.Unlock()
	return f.Store.CompareAndSet(ctx, key, expect, value)
}

func newGens(t testing.TB, st Store, node string, lease time.Duration, clock func() time.Time) *StoreGenerations {
	t.Helper()
	g, err := NewStoreGenerations(StoreGenerationsConfig{Store: st, Node: node, PushLease: lease, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// endPush ends p and fails the test on error.
func endPush(t testing.TB, p *Push) bool {
	t.Helper()
	idle, err := p.End(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return idle
}

// TestPushCrashAfterRefMoved is defect 4 of issue 13 in one process: two
// nodes share a store; node B has cached the ref listing; node A begins
// a push and dies as its git moves the ref (A's store handle fails from
// then on: no renewal, no End). B lists
// the new ref at once (its cache steps aside while the marker stands,
// and kept nothing listed between the marker and the ref move),
// and once B has seen the marker unchanged for a lease it removes it and
// caches again, still the new ref.
func TestPushCrashAfterRefMoved(t *testing.T) {
	r := newRepo(t, 3)
	shared := &MemStore{}
	storeA := &faultyStore{Store: shared}
	const leaseA = 600 * time.Millisecond // A's keeper gives up after 300 ms
	clockB := newFakeClock()
	const leaseB = 30 * time.Second
	a := newCache(t, Config{LsRefs: true, Generations: newGens(t, storeA, "a", leaseA, nil)})
	b := newCache(t, Config{LsRefs: true, Generations: newGens(t, shared, "b", leaseB, clockB.Now)})
	repos := map[string]string{"r": r.bare}
	sb := newServer(t, b, repos, false)
	v2 := []string{"-c", "protocol.version=2"}
	mainAt := func() string {
		out := run(t, "", append(v2, "ls-remote", sb.url("r"), "refs/heads/main")...)
		id, _, _ := strings.Cut(out, "\t")
		return id
	}
	old := run(t, r.bare, "rev-parse", "main")
	for range 2 {
		if got := mainAt(); got != old {
			t.Fatalf("B lists %s before the push, want %s", got, old)
		}
	}
	if st := b.Stats(); st.LsRefsHits != 1 {
		t.Fatalf("B's stats before the push %+v: want one ls-refs hit", st)
	}

	p, err := a.BeginPush(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	storeA.set(true, false) // node A dies: no renewal, no End
	// Between BeginPush and the ref move B may still list (and would
	// cache, were it not for the marker) the old refs.
	for range 2 {
		if got := mainAt(); got != old {
			t.Fatalf("B lists %s before the ref moved, want %s", got, old)
		}
	}
	head := r.push(t, "moved") // A's git moved the ref as A died
	for range 3 {
		if got := mainAt(); got != head {
			t.Fatalf("B lists %s after the ref moved, want %s", got, head)
		}
	}
	if got := run(t, clone(t, sb.url("r"), v2...), "rev-parse", "main"); got != head {
		t.Fatalf("clone through B has main at %s, want %s", got, head)
	}
	select {
	case <-p.Expired():
	case <-time.After(30 * time.Second):
		t.Fatal("A's push never expired with its store gone")
	}
	if !errors.Is(p.Cause(), ErrPushLost) {
		t.Fatalf("cause %v, want ErrPushLost", p.Cause())
	}

	hits := b.Stats().LsRefsHits
	clockB.Add(leaseB - time.Millisecond)
	if got := mainAt(); got != head || b.Stats().LsRefsHits != hits {
		t.Fatalf("B before the lease: lists %s (want %s), hits %d (want %d)", got, head, b.Stats().LsRefsHits, hits)
	}
	clockB.Add(time.Millisecond)
	for range 2 {
		if got := mainAt(); got != head {
			t.Fatalf("B lists %s after the dead marker went, want %s", got, head)
		}
	}
	if st := b.Stats(); st.LsRefsHits != hits+1 {
		t.Fatalf("B's stats %+v: want caching back (one more ls-refs hit) once the marker expired", st)
	}
}

// TestPushWindowNothingPublished: an entry whose production began before
// a push and ends while it runs is not published, nor is anything asked
// for while the marker stands (those bypass); after End the cache serves
// the new refs.
func TestPushWindowNothingPublished(t *testing.T) {
	r := newRepo(t, 6)
	st := &MemStore{}
	c := newCache(t, Config{Generations: newGens(t, st, "a", time.Minute, nil)})
	g := blockFirstWrite(c)
	old := run(t, r.bare, "rev-parse", "main")
	body := v0Clone(v0caps, old)
	done := make(chan error, 1)
	go func() {
		var out bytes.Buffer
		_, err := c.ServeUploadPack(context.Background(), &out, "r", r.bare, "", bytes.NewReader(body))
		done <- err
	}()
	g.wait(t)
	p, err := c.BeginPush(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	close(g.open)
	if err := <-done; !errors.Is(err, ErrInvalidated) {
		t.Fatalf("production across BeginPush: %v, want ErrInvalidated", err)
	}
	head := r.push(t, "during")
	during := v0Clone(v0caps, head)
	for range 2 {
		if _, res, err := serve(t, c, "r", r.bare, "", during); res != Bypass || err != nil {
			t.Fatalf("request during the push: %v %v, want a bypass", res, err)
		}
	}
	if idle := endPush(t, p); !idle {
		t.Fatal("End of the only push: not idle")
	}
	for _, want := range []Result{Miss, Hit} {
		if _, res, err := serve(t, c, "r", r.bare, "", during); res != want || err != nil {
			t.Fatalf("request after the push: %v %v, want %v", res, err, want)
		}
	}
	if s := c.Stats(); s.Published != 1 || s.Pushes != 1 {
		t.Fatalf("stats %+v: want only the entry made after the push published", s)
	}
}

// TestMarkerJudgement steps one reader's judgement of markers by a fake
// clock: a marker keeps the repository uncached while it is renewed or
// younger than the lease (as seen by the reader), a dead one among live
// ones waits for them, and markers seen unchanged for a lease are removed
// with a new generation.
func TestMarkerJudgement(t *testing.T) {
	ctx := context.Background()
	const lease = 10 * time.Second
	st := &MemStore{}
	clock := newFakeClock()
	reader := newGens(t, st, "reader", lease, clock.Now)
	write := func(s pushState) uint64 {
		t.Helper()
		_, v, _ := st.Get(ctx, "packcache/gen/r")
		next, err := st.CompareAndSet(ctx, "packcache/gen/r", v, s.encode())
		if err != nil {
			t.Fatal(err)
		}
		return next
	}
	expectPushing := func(step string) {
		t.Helper()
		if _, err := reader.Generation(ctx, "r"); !errors.Is(err, ErrPushInProgress) {
			t.Fatalf("%s: %v, want ErrPushInProgress", step, err)
		}
	}
	v0 := write(pushState{})
	if g, err := reader.Generation(ctx, "r"); g != v0 || err != nil {
		t.Fatalf("no markers: %d %v, want %d", g, err, v0)
	}
	write(pushState{Pushes: []marker{{ID: "a-1", Seq: 0}}})
	expectPushing("new marker")
	clock.Add(lease - time.Second)
	expectPushing("before the lease")
	write(pushState{Pushes: []marker{{ID: "a-1", Seq: 1}}}) // renewed
	clock.Add(2 * time.Second)
	expectPushing("renewed just before the lease")
	write(pushState{Pushes: []marker{{ID: "a-1", Seq: 1}, {ID: "b-1"}}})
	clock.Add(lease - time.Second) // a-1 seen unchanged for a lease now
	expectPushing("a dead marker beside a live one")
	v := write(pushState{Pushes: []marker{{ID: "a-1", Seq: 1}, {ID: "b-1", Seq: 1}}})
	clock.Add(lease)
	expectPushing("b-1's renewal seen only now")
	clock.Add(lease)
	g, err := reader.Generation(ctx, "r")
	if err != nil || g <= v {
		t.Fatalf("every marker dead: %d %v, want a generation above %d", g, err, v)
	}
	value, _, _ := st.Get(ctx, "packcache/gen/r")
	if s, err := decodeState(value); err != nil || len(s.Pushes) != 0 {
		t.Fatalf("record after the removal: %+v %v", s, err)
	}
	if again, err := reader.Generation(ctx, "r"); again != g || err != nil {
		t.Fatalf("generation after the removal: %d %v, want %d", again, err, g)
	}
	if len(reader.seen) != 0 {
		t.Fatalf("sightings kept after the markers went: %v", reader.seen)
	}
}

// TestPushLostWithoutStore: a push whose renewals fail expires within
// half a lease of its last renewal (ErrPushLost); its End fails within
// its context and leaves the marker, which another node removes after a
// lease.
func TestPushLostWithoutStore(t *testing.T) {
	shared := &MemStore{}
	mine := &faultyStore{Store: shared}
	const lease = 900 * time.Millisecond
	g := newGens(t, mine, "a", lease, nil)
	p, err := g.BeginPush(context.Background(), "r")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a renewal", func() bool {
		mine.mu.Lock()
		defer mine.mu.Unlock()
		return mine.writes >= 2
	})
	mine.set(false, true) // the store stops answering
	cut := time.Now()
	select {
	case <-p.Expired():
	case <-time.After(30 * time.Second):
		t.Fatal("the push never expired")
	}
	// The last renewal was sent before cut: expiry may not come later
	// than half a lease after it, give or take the scheduler.
	if late := time.Since(cut); late > lease/2+2*time.Second {
		t.Errorf("expired %v after the store stopped answering, lease/2 is %v", late, lease/2)
	}
	if !errors.Is(p.Cause(), ErrPushLost) {
		t.Fatalf("cause %v", p.Cause())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.End(ctx); err == nil {
		t.Fatal("End succeeded without a store")
	}
	clock := newFakeClock()
	other := newGens(t, shared, "b", lease, clock.Now)
	if _, err := other.Generation(context.Background(), "r"); !errors.Is(err, ErrPushInProgress) {
		t.Fatalf("other node right after: %v", err)
	}
	clock.Add(lease)
	if _, err := other.Generation(context.Background(), "r"); err != nil {
		t.Fatalf("other node after a lease: %v", err)
	}
}

// TestBeginPushWithoutStore: a store that does not answer makes BeginPush
// fail when its context ends, and nothing is recorded.
func TestBeginPushWithoutStore(t *testing.T) {
	shared := &MemStore{}
	mine := &faultyStore{Store: shared}
	mine.set(false, true)
	c := newCache(t, Config{Generations: newGens(t, mine, "a", time.Minute, nil)})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	p, err := c.BeginPush(ctx, "r")
	if p != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BeginPush without a store: %v %v", p, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("BeginPush took %v to give up", d)
	}
	if v, ver, _ := shared.Get(context.Background(), "packcache/gen/r"); v != nil || ver != 0 {
		t.Fatalf("a record was written: %q at %d", v, ver)
	}
	if s := c.Stats(); s.Pushes != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestConcurrentPushes: two pushes of a repository hold two markers; the
// first to end is not idle, the second is, and every Begin and End raises
// the generation.
func TestConcurrentPushes(t *testing.T) {
	ctx := context.Background()
	st := &MemStore{}
	ga, gb := newGens(t, st, "a", time.Minute, nil), newGens(t, st, "b", time.Minute, nil)
	var last uint64
	step := func(what string) {
		t.Helper()
		_, v, _ := st.Get(ctx, "packcache/gen/r")
		if v <= last {
			t.Fatalf("%s: version %d, not above %d", what, v, last)
		}
		last = v
	}
	pa, err := ga.BeginPush(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	step("begin a")
	pb, err := gb.BeginPush(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	step("begin b")
	if idle := endPush(t, pa); idle {
		t.Fatal("a ended while b runs: idle")
	}
	step("end a")
	if _, err := ga.Generation(ctx, "r"); !errors.Is(err, ErrPushInProgress) {
		t.Fatalf("with b running: %v", err)
	}
	if idle := endPush(t, pb); !idle {
		t.Fatal("b ended last: not idle")
	}
	step("end b")
	if again, err := pb.End(ctx); !again || err != nil {
		t.Fatalf("End twice: %v %v", again, err)
	}
	if g, err := ga.Generation(ctx, "r"); err != nil || g != last {
		t.Fatalf("after both: %d %v, want %d", g, err, last)
	}
}

// TestLocalPushWithoutMarkers: with MemGenerations (a single process) a
// push bumps the generation before and after, and End says whether it
// was the last.
func TestLocalPushWithoutMarkers(t *testing.T) {
	ctx := context.Background()
	gens := &MemGenerations{}
	c := newCache(t, Config{Generations: gens})
	p1, err := c.BeginPush(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := c.BeginPush(ctx, "r")
	if g, _ := gens.Generation(ctx, "r"); g != 2 {
		t.Fatalf("generation %d after two begins", g)
	}
	if endPush(t, p1) || !endPush(t, p2) {
		t.Fatal("idle wrong")
	}
	if g, _ := gens.Generation(ctx, "r"); g != 4 {
		t.Fatalf("generation %d after two ends", g)
	}
}

// TestDecodeState: the legacy value and an empty one have no markers;
// bad records are ErrCorrupt; Bump replaces a corrupt record.
func TestDecodeState(t *testing.T) {
	for _, tc := range []struct {
		in      string
		markers int
		bad     bool
	}{
		{"", 0, false},
		{"\x01", 0, false},
		{"{}", 0, false},
		{`{"pushes":[{"id":"a","seq":3}]}`, 1, false},
		{`{"pushes":[{"id":"a"},{"id":"a"}]}`, 0, true},
		{`{"pushes":[{"id":""}]}`, 0, true},
		{`{"pushes":[{"id":"a"}]} {}`, 0, true},
		{`{"other":1}`, 0, true},
		{"\x02", 0, true},
		{`{"pushes":[` + strings.Repeat(`{"id":"x"},`, maxMarkers) + `{"id":"y"}]}`, 0, true},
	} {
		st, err := decodeState([]byte(tc.in))
		if tc.bad != (err != nil) || (err != nil && !errors.Is(err, ErrCorrupt)) || len(st.Pushes) != tc.markers {
			t.Errorf("decode %q: %+v %v", tc.in, st, err)
		}
	}
	ctx := context.Background()
	st := &MemStore{}
	st.CompareAndSet(ctx, "packcache/gen/r", 0, []byte("garbage"))
	g := newGens(t, st, "a", time.Minute, nil)
	if _, err := g.Generation(ctx, "r"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("generation of a corrupt record: %v", err)
	}
	if _, err := g.Bump(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Generation(ctx, "r"); err != nil {
		t.Fatalf("after Bump: %v", err)
	}
}

// FuzzDecodeState: any record decodes without panicking, to ErrCorrupt or
// to a record within the bounds that encodes and decodes to itself.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"pushes":[{"id":"node-1-00ff","node":"node-1","seq":2}]}`))
	f.Add([]byte{1})
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeState(st.encode())
		if err != nil || len(again.Pushes) != len(st.Pushes) {
			t.Fatalf("re-encoded %+v: %+v %v", st, again, err)
		}
		for i := range st.Pushes {
			if again.Pushes[i] != st.Pushes[i] {
				t.Fatalf("re-encoded marker %d: %+v, want %+v", i, again.Pushes[i], st.Pushes[i])
			}
		}
	})
}
