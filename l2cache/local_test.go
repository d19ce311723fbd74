package l2cache

import (
	"context"
	"errors"
	"fmt"
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
