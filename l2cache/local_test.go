package l2cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

func newLocal(t testing.TB, cfg Config) *Cache {
	t.Helper()
	cfg.Logger = testkit.Logger(t)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func region(t testing.TB, c *Cache, name string, access AccessType) *Region {
	t.Helper()
	r, err := c.Region(name, EntityRegion, access)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// regionsOn is region on each of caches, in order.
func regionsOn(t testing.TB, caches []*Cache, name string, access AccessType) []*Region {
	t.Helper()
	regions := make([]*Region, len(caches))
	for i, c := range caches {
		regions[i] = region(t, c, name, access)
	}
	return regions
}

// queryRegionsOn is query region name, nonstrict read-write, on each of
// caches, in order.
func queryRegionsOn(t testing.TB, caches []*Cache, name string) []*Region {
	t.Helper()
	regions := make([]*Region, len(caches))
	for i, c := range caches {
		var err error
		if regions[i], err = c.Region(name, QueryRegion, NonstrictReadWrite); err != nil {
			t.Fatal(err)
		}
	}
	return regions
}

func constLoader(v string) Loader {
	return func(context.Context) ([]byte, error) { return []byte(v), nil }
}

// The stale put race, step by step on one node: a load begins, a write
// commits and evicts, then the load's put arrives — and is refused.
func TestStalePutRefusedLocally(t *testing.T) {
	for _, access := range []AccessType{NonstrictReadWrite, ReadWrite} {
		t.Run(access.String(), func(t *testing.T) {
			c := newLocal(t, Config{})
			r := region(t, c, "pr", access)
			ctx := context.Background()
			db := "v1"
			loadStarted, release := make(chan struct{}), make(chan struct{})
			got := make(chan string)
			go func() {
				v, _ := r.Get(ctx, "1", func(context.Context) ([]byte, error) {
					read := db // the row as of the load's start
					close(loadStarted)
					<-release
					return []byte(read), nil
				})
				got <- string(v)
			}()
			<-loadStarted
			// The writer: commit, then invalidate per the access strategy.
			if access == ReadWrite {
				if err := r.Lock(ctx, "1"); err != nil {
					t.Fatal(err)
				}
				db = "v2"
				if err := r.Unlock(ctx, "1"); err != nil {
					t.Fatal(err)
				}
			} else {
				db = "v2"
				if err := r.Evict(ctx, "1"); err != nil {
					t.Fatal(err)
				}
			}
			close(release)
			if v := <-got; v != "v1" {
				t.Fatalf("the racing reader got %q", v) // it read before the write
			}
			c.waitLocal()
			v, err := r.Get(ctx, "1", func(context.Context) ([]byte, error) { return []byte(db), nil })
			if err != nil || string(v) != "v2" {
				t.Fatalf("after the race the cache served %q (%v): the stale put landed", v, err)
			}
			if s := r.stats.snapshot(); s.RefusedPuts != 1 {
				t.Fatalf("refused puts = %d, want 1", s.RefusedPuts)
			}
		})
	}
}

// Ristretto drops a second Set of a new key and may still return a key
// just deleted: neither may bring back an invalidated value.
func TestRistrettoCannotResurrect(t *testing.T) {
	c := newLocal(t, Config{})
	r := region(t, c, "e", NonstrictReadWrite)
	ctx := context.Background()
	for i := 0; i < 10000; i++ {
		key := fmt.Sprint(i % 50)
		old := fmt.Sprintf("old-%d", i)
		if _, err := r.Get(ctx, key, constLoader(old)); err != nil {
			t.Fatal(err)
		}
		if err := r.Evict(ctx, key); err != nil {
			t.Fatal(err)
		}
		v, err := r.Get(ctx, key, constLoader(fmt.Sprintf("new-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if string(v) == old {
			t.Fatalf("trial %d: an evicted value came back", i)
		}
		// Immediately again: the new value, or a reload; never the old one.
		if v, _ := r.Get(ctx, key, constLoader("reload")); string(v) == old {
			t.Fatalf("trial %d: an evicted value came back on the second read", i)
		}
	}
}

func TestSoftLock(t *testing.T) {
	now := time.Unix(0, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := newLocal(t, Config{LockTimeout: time.Minute, Now: clock})
	r := region(t, c, "e", ReadWrite)
	ctx := context.Background()
	r.Get(ctx, "k", constLoader("v1"))
	c.waitLocal()
	if err := r.Lock(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	var loads atomic.Int32
	counting := func(context.Context) ([]byte, error) { loads.Add(1); return []byte("x"), nil }
	for i := 0; i < 3; i++ {
		r.Get(ctx, "k", counting)
		c.waitLocal()
	}
	if loads.Load() != 3 {
		t.Fatalf("a locked key was served from the cache (%d loads of 3)", loads.Load())
	}
	// A lock never released expires.
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	r.Get(ctx, "k", counting)
	c.waitLocal()
	r.Get(ctx, "k", counting)
	if loads.Load() != 4 {
		t.Fatalf("after the lock expired: %d loads, want 4", loads.Load())
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	c := newLocal(t, Config{})
	r := region(t, c, "ro", ReadOnly)
	ctx := context.Background()
	for _, err := range []error{r.Evict(ctx, "k"), r.Lock(ctx, "k"), r.Unlock(ctx, "k"), r.EvictAll(ctx)} {
		if !errors.Is(err, ErrReadOnly) {
			t.Fatalf("got %v, want ErrReadOnly", err)
		}
	}
	if _, err := c.Region("ro", EntityRegion, ReadWrite); err == nil {
		t.Fatal("a region was redeclared with another strategy")
	}
}

// Fifty concurrent Gets of one key run one load.
func TestConcurrentLoadsMerge(t *testing.T) {
	c := newLocal(t, Config{})
	r := region(t, c, "e", NonstrictReadWrite)
	var loads atomic.Int32
	release := make(chan struct{})
	loader := func(context.Context) ([]byte, error) {
		loads.Add(1)
		<-release
		return []byte("v"), nil
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := r.Get(context.Background(), "k", loader); err != nil || string(v) != "v" {
				t.Error(v, err)
			}
		}()
	}
	for r.stats.Misses.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads for 50 concurrent Gets", n)
	}
}

// A Get that starts after an eviction must not join a load that began
// before it: that load may return the row as it was before the write.
func TestGetAfterWriteDoesNotJoinOlderLoad(t *testing.T) {
	c := newLocal(t, Config{})
	r := region(t, c, "e", NonstrictReadWrite)
	ctx := context.Background()
	started, release := make(chan struct{}), make(chan struct{})
	go r.Get(ctx, "k", func(context.Context) ([]byte, error) {
		close(started)
		<-release
		return []byte("old"), nil
	})
	<-started
	r.Evict(ctx, "k") // the write commits and evicts
	v, err := r.Get(ctx, "k", constLoader("new"))
	close(release)
	if err != nil || string(v) != "new" {
		t.Fatalf("a read after the write got %q (%v)", v, err)
	}
}

func TestQueryRegionAndSpaces(t *testing.T) {
	c := newLocal(t, Config{})
	q, err := c.Region("q", QueryRegion, NonstrictReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var loads atomic.Int32
	load := func(context.Context) ([]byte, error) { loads.Add(1); return []byte("rows"), nil }
	q.GetQuery(ctx, "prs of repo 1", []string{"pull_request"}, load)
	c.waitLocal()
	q.GetQuery(ctx, "prs of repo 1", []string{"pull_request"}, load)
	if loads.Load() != 1 {
		t.Fatalf("%d loads, want a hit", loads.Load())
	}
	c.UpdateSpaces(ctx, "comment") // another table: still valid
	q.GetQuery(ctx, "prs of repo 1", []string{"pull_request"}, load)
	if loads.Load() != 1 {
		t.Fatal("an unrelated table's update invalidated the query")
	}
	c.UpdateSpaces(ctx, "pull_request")
	q.GetQuery(ctx, "prs of repo 1", []string{"pull_request"}, load)
	if loads.Load() != 2 {
		t.Fatal("an update of the query's table did not invalidate it")
	}
}

type pr struct {
	ID    int64
	Title string
	Tags  []string
}

func TestTyped(t *testing.T) {
	c := newLocal(t, Config{})
	tr := Typed[pr]{R: region(t, c, "pr", ReadWrite)}
	ctx := context.Background()
	want := pr{ID: 7, Title: "fix", Tags: []string{"a", "b"}}
	got, err := tr.Get(ctx, "7", func(context.Context) (pr, error) { return want, nil })
	if err != nil || got.Title != "fix" || len(got.Tags) != 2 {
		t.Fatalf("%+v %v", got, err)
	}
	c.waitLocal()
	got, err = tr.Get(ctx, "7", func(context.Context) (pr, error) { return pr{}, errors.New("not cached") })
	if err != nil || got.ID != 7 {
		t.Fatalf("hit: %+v %v", got, err)
	}
}

// Typed.Cached answers LOCAL hits only, counts them as Get would, and
// counts nothing when it answers false (the Get that follows counts).
func TestTypedCached(t *testing.T) {
	c := newLocal(t, Config{})
	r := region(t, c, "pr", ReadWrite)
	tr := Typed[pr]{R: r}
	ctx := context.Background()
	stats := func() RegionStatsSnapshot { return c.Stats().Regions["pr"] }
	if _, ok := tr.Cached("7"); ok {
		t.Fatal("a hit in an empty cache")
	}
	if s := stats(); s.Hits != 0 || s.Misses != 0 {
		t.Fatalf("a false Cached counted: %+v", s)
	}
	version := "v1"
	load := func(context.Context) (pr, error) { return pr{ID: 7, Title: version, Tags: []string{"a"}}, nil }
	if _, err := tr.Get(ctx, "7", load); err != nil {
		t.Fatal(err)
	}
	c.waitLocal()
	got, ok := tr.Cached("7")
	if !ok || got.Title != "v1" || len(got.Tags) != 1 {
		t.Fatalf("Cached after a load: %+v %v", got, ok)
	}
	if s := stats(); s.Hits != 1 || s.Misses != 1 {
		t.Fatalf("after a miss and a hit: %+v", s)
	}
	// A soft lock, an unlock and an eviction each make it a miss.
	if err := r.Lock(ctx, "7"); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Cached("7"); ok {
		t.Fatal("a hit on a soft-locked key")
	}
	version = "v2"
	if err := r.Unlock(ctx, "7"); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Cached("7"); ok {
		t.Fatal("a hit after the unlock invalidated the key")
	}
	if got, err := tr.Get(ctx, "7", load); err != nil || got.Title != "v2" {
		t.Fatalf("the reload: %+v %v", got, err)
	}
	c.waitLocal()
	if got, ok := tr.Cached("7"); !ok || got.Title != "v2" {
		t.Fatalf("Cached after the reload: %+v %v", got, ok)
	}
	if err := r.Evict(ctx, "7"); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Cached("7"); ok {
		t.Fatal("a hit after an eviction")
	}
	// A value that does not decode as a pr is not a hit; Get returns
	// the error.
	if _, err := r.Get(ctx, "8", constLoader("not msgpack of a pr")); err != nil {
		t.Fatal(err)
	}
	c.waitLocal()
	if _, ok := tr.Cached("8"); ok {
		t.Fatal("a hit on a value that does not decode")
	}
	if _, err := tr.Get(ctx, "8", load); err == nil {
		t.Fatal("Get decoded a value that is not a pr")
	}
}

// A hit through Typed.Cached allocates nothing, even with a key built on
// the caller's stack (Cached must not let it escape).
func TestTypedCachedHitAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops items at random (ristretto pools its access buffers)")
	}
	c := newLocal(t, Config{})
	tr := Typed[pr]{R: region(t, c, "pr", ReadWrite)}
	if _, err := tr.Get(context.Background(), "1234", func(context.Context) (pr, error) { return pr{ID: 1234, Tags: []string{"x"}}, nil }); err != nil {
		t.Fatal(err)
	}
	c.waitLocal()
	id := int64(1234)
	allocs := testing.AllocsPerRun(1000, func() {
		var buf [20]byte
		v, ok := tr.Cached(string(strconv.AppendInt(buf[:0], id, 10)))
		if !ok || v.ID != 1234 {
			t.Fatalf("no hit: %+v %v", v, ok)
		}
	})
	if allocs != 0 {
		t.Fatalf("a hit allocates %.0f times", allocs)
	}
}

// The LOCAL store knows entries by a hash of their key: an entry of
// another key, or of another region, found under a key's hash is a miss,
// and a load of the key replaces it.
func TestLocalStoreHashCollision(t *testing.T) {
	c := newLocal(t, Config{})
	ctx := context.Background()
	r, other := region(t, c, "pr", NonstrictReadWrite), region(t, c, "user", NonstrictReadWrite)
	lr, lo := r.part(beLocal).(*localRegion), other.part(beLocal).(*localRegion)
	for _, e := range []*localEntry{
		{entry: entry{value: []byte("b's"), stamp: c.tick()}, region: lr, key: "b"},
		{entry: entry{value: []byte("user a's"), stamp: c.tick()}, region: lo, key: "a"},
	} {
		h := lr.hash("a")
		lr.b.store.Set(h, e, 1)
		c.waitLocal()
		if got, ok := lr.b.store.Get(h); !ok || got != e {
			t.Fatal("the colliding entry was not stored")
		}
		if v, ok := r.lookup("a", nil); ok {
			t.Fatalf("key a read %s, the entry of region %s's key %s", v, e.region.name, e.key)
		}
		if _, ok := (Typed[string]{R: r}).Cached("a"); ok {
			t.Fatal("Cached served another key's entry")
		}
		if v, err := r.Get(ctx, "a", constLoader("a's")); err != nil || string(v) != "a's" {
			t.Fatalf("Get: %s %v", v, err)
		}
		c.waitLocal()
		if v, ok := r.lookup("a", nil); !ok || string(v) != "a's" {
			t.Fatalf("after the load: %s %v", v, ok)
		}
		r.Evict(ctx, "a")
	}
}
