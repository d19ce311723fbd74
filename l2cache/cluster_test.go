package l2cache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// nodeCaches starts n cluster nodes on an in-memory network, each with a
// LOCAL cache on the node's bus.
func nodeCaches(t *testing.T, seed uint64, n int, invalidation string) (*memnet.Network, []*Cache) {
	t.Helper()
	net := memnet.New(seed)
	t.Cleanup(func() { net.Close() })
	nodes := clustertest.Start(t, net, n, nil)
	caches := make([]*Cache, n)
	for i, nd := range nodes {
		caches[i] = newLocal(t, Config{Bus: nd.Bus(), Invalidation: invalidation})
	}
	return net, caches
}

// The stale put race across nodes: a reader on B begins a load, a writer
// on A commits and invalidates, the invalidation reaches B, then B's put
// arrives — and is refused.
func TestStalePutRefusedAcrossNodes(t *testing.T) {
	for _, inv := range []string{InvalidationSync, InvalidationAsync} {
		t.Run(inv, func(t *testing.T) {
			_, caches := nodeCaches(t, 1, 2, inv)
			a, b := region(t, caches[0], "pr", NonstrictReadWrite), region(t, caches[1], "pr", NonstrictReadWrite)
			ctx := context.Background()
			var db atomic.Value
			db.Store("v1")
			release := heldLoad(ctx, b, "1", &db)
			db.Store("v2")
			if err := a.Evict(ctx, "1"); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 5*time.Second, "the invalidation at B", func() bool {
				return caches[1].stats.InvalidationsReceived.Load() == 1
			})
			release()
			caches[1].waitLocal()
			v, _ := b.Get(ctx, "1", func(context.Context) ([]byte, error) { return []byte(db.Load().(string)), nil })
			if string(v) != "v2" {
				t.Fatalf("B serves %q after the race: the stale put landed", v)
			}
		})
	}
}

// With sync invalidation, a read on any node that starts after the write
// returned sees the new state — even on a machine so loaded that members
// are declared failed and stop being sent to (the read lease keeps them
// from serving).
func TestSyncInvalidationVisibleEverywhere(t *testing.T) {
	caches := startLeased(t, 2, 3, cluster.CacheModeLocal, InvalidationSync).caches
	var regions []*Region
	for _, c := range caches {
		regions = append(regions, region(t, c, "pr", NonstrictReadWrite))
	}
	ctx := context.Background()
	var db atomic.Int64
	load := func(context.Context) ([]byte, error) { return []byte(strconv.FormatInt(db.Load(), 10)), nil }
	for i := 0; i < 50; i++ {
		for _, r := range regions {
			r.Get(ctx, "k", load)
		}
		for _, c := range caches {
			c.waitLocal()
		}
		db.Add(1)
		if err := regions[i%3].Evict(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		for j, r := range regions {
			if v, _ := r.Get(ctx, "k", load); string(v) != strconv.FormatInt(db.Load(), 10) {
				t.Fatalf("round %d: node %d read %s after the write returned, want %d", i, j+1, v, db.Load())
			}
		}
	}
}

// A lost invalidation is reported as missed, and the cache clears what it
// cannot vouch for: the region the lost message was for, and no other.
func TestLostInvalidationClearsRegion(t *testing.T) {
	net, caches := nodeCaches(t, 3, 2, InvalidationAsync)
	a, b := region(t, caches[0], "pr", NonstrictReadWrite), region(t, caches[1], "pr", NonstrictReadWrite)
	region(t, caches[0], "user", NonstrictReadWrite)
	other := region(t, caches[1], "user", NonstrictReadWrite)
	ctx := context.Background()
	var db atomic.Value
	db.Store("v1")
	load := func(context.Context) ([]byte, error) { return []byte(db.Load().(string)), nil }
	testkit.Eventually(t, 5*time.Second, "B to cache v1", func() bool {
		b.Get(ctx, "1", load)
		other.Get(ctx, "u", load)
		caches[1].waitLocal()
		_, ok := b.lookup("1", nil)
		_, ok2 := other.lookup("u", nil)
		return ok && ok2
	})
	net.SetFaults(memnet.Faults{DropRate: 1, Match: func(tr memnet.Traffic) bool {
		return tr.Kind == memnet.Frame && tr.Frame.Type == "bus"
	}})
	db.Store("v2")
	a.Evict(ctx, "1") // lost on the way to B (sent once the connection is up)
	testkit.Eventually(t, 5*time.Second, "the invalidation to be dropped", func() bool { return net.Stats().Frames.Dropped > 0 })
	net.SetFaults(memnet.Faults{})
	testkit.Eventually(t, 10*time.Second, "B to learn it missed something and serve v2", func() bool {
		v, _ := b.Get(ctx, "1", load)
		return string(v) == "v2"
	})
	if caches[1].stats.MissedClears.Load() == 0 || b.stats.MissedClears.Load() == 0 {
		t.Fatal("B served v2 without a missed-message clear: how?")
	}
	if _, ok := other.lookup("u", nil); !ok || other.stats.MissedClears.Load() != 0 {
		t.Fatal("a region no lost message was for was cleared too")
	}
}

// A randomized test over a real SQLite database: readers and writers on
// three nodes hit a few hot rows for a fixed number of operations. With
// sync invalidation no read that starts after a write returned may see an
// older version; with async, lost and delayed bus messages are allowed
// (seeded), and once the bus settles every cached value equals its row.
func TestRandomizedAgainstSQLite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inv    string
		access AccessType
		faults memnet.Faults
	}{
		{"sync-nonstrict", InvalidationSync, NonstrictReadWrite, memnet.Faults{}},
		{"sync-readwrite", InvalidationSync, ReadWrite, memnet.Faults{}},
		{"async-lossy", InvalidationAsync, NonstrictReadWrite, memnet.Faults{DropRate: 0.1, DelayMax: 5 * time.Millisecond,
			Match: func(tr memnet.Traffic) bool { return tr.Kind == memnet.Frame && tr.Frame.Type == "bus" }}},
		{"async-readwrite-delayed", InvalidationAsync, ReadWrite, memnet.Faults{DelayMax: 10 * time.Millisecond,
			Match: func(tr memnet.Traffic) bool { return tr.Kind == memnet.Frame && tr.Frame.Type == "bus" }}},
	} {
		t.Run(tc.name, func(t *testing.T) { randomized(t, tc.inv, tc.access, tc.faults) })
	}
}

// randomized runs with read leases, as nodes do: a member slow enough to
// miss a synchronous invalidation's deadline on a loaded machine is then
// excluded from serving instead of failing the write.
func randomized(t *testing.T, inv string, access AccessType, faults memnet.Faults) {
	lc := startLeased(t, 42, 3, cluster.CacheModeLocal, inv)
	lc.net.SetFaults(faults)
	randomizedOn(t, lc.net, lc.caches, inv, access)
}

// randomizedOn runs the randomized workload on caches; net, if set, is
// healed before the final check.
func randomizedOn(t *testing.T, net *memnet.Network, caches []*Cache, inv string, access AccessType) {
	db := openDB(t, 4)
	var regions []*Region
	for _, c := range caches {
		regions = append(regions, region(t, c, "rows", access))
	}
	ctx := context.Background()
	const keys, opsPerWorker = 4, 150
	var acked [keys]atomic.Int64 // the newest version whose write has returned
	var rewrites atomic.Int64
	runWorkers(t, len(regions), 3, opsPerWorker, func(rng *rand.Rand, n, w int) error {
		id := rng.IntN(keys)
		if w != 0 || rng.IntN(3) != 0 {
			return read(ctx, db, regions[n], id, inv, &acked[id])
		}
		err := write(ctx, db, regions[n], id, &acked[id])
		// A write whose invalidation a member did not acknowledge, and
		// which could not exclude it either (the store out of reach for
		// the exclusion's deadline: a leader elected again on a loaded
		// machine), is not acknowledged (ErrExcludeFailed): the client
		// writes again, as an application would. Reads still check
		// against the acknowledged writes only.
		for tries := 1; errors.Is(err, ErrExcludeFailed) && tries < 5; tries++ {
			rewrites.Add(1)
			err = write(ctx, db, regions[n], id, &acked[id])
		}
		return err
	})
	if n := rewrites.Load(); n > 0 {
		t.Logf("%d writes not acknowledged (ErrExcludeFailed) were written again", n)
	}
	if net != nil {
		net.SetFaults(memnet.Faults{})
	}
	// Once invalidations are delivered (or reported missed), every node's
	// cached value equals the row.
	for id := 0; id < keys; id++ {
		want := rowVersion(t, db, id)
		for n, r := range regions {
			testkit.Eventually(t, 10*time.Second, fmt.Sprintf("node %d's cached row %d to match the database", n+1, id), func() bool {
				v, ok := cached(r, rowKey(id))
				return !ok || string(v) == strconv.FormatInt(want, 10)
			})
		}
	}
}

// cached is what the cache holds for key, as this node sees it: its own
// copy in LOCAL mode, the owner's in DISTRIBUTED mode.
func cached(r *Region, key string) ([]byte, bool) {
	if distOf(r.c) == nil {
		return r.lookup(key, nil)
	}
	rep, err := distOf(r.c).get(context.Background(), r.name, key, nil)
	return rep.Value, err == nil && rep.Hit
}

// rowKey is the cache key of row id in the randomized tests (a test may
// choose keys that share a partition, and put it back when it ends).
var rowKey = strconv.Itoa

func read(ctx context.Context, db *sql.DB, r *Region, id int, inv string, acked *atomic.Int64) error {
	floor := acked.Load()
	v, err := r.Get(ctx, rowKey(id), func(ctx context.Context) ([]byte, error) {
		var version int64
		if err := db.QueryRowContext(ctx, "SELECT version FROM rows WHERE id = ?", id).Scan(&version); err != nil {
			return nil, err
		}
		return []byte(strconv.FormatInt(version, 10)), nil
	})
	if err != nil {
		return err
	}
	got, _ := strconv.ParseInt(string(v), 10, 64)
	if inv == InvalidationSync && got < floor {
		return fmt.Errorf("row %d: read version %d, but version %d was written before the read began", id, got, floor)
	}
	return nil
}

func write(ctx context.Context, db *sql.DB, r *Region, id int, acked *atomic.Int64) error {
	key := rowKey(id)
	if r.access == ReadWrite {
		if err := r.Lock(ctx, key); err != nil {
			return err
		}
	}
	var version int64
	err := db.QueryRowContext(ctx, "UPDATE rows SET version = version + 1 WHERE id = ? RETURNING version", id).Scan(&version)
	switch {
	case r.access == ReadWrite && err == nil && version%2 == 1:
		// Half the committed updates unlock with their row, which the
		// owner and the near holders keep only if no other writer
		// locked the key meanwhile (UnlockWith).
		err = r.UnlockWith(ctx, key, []byte(strconv.FormatInt(version, 10)))
	case r.access == ReadWrite:
		err = firstErr(err, r.Unlock(ctx, key))
	case err == nil:
		err = r.Evict(ctx, key)
	}
	if err != nil {
		return err
	}
	raise(acked, version)
	return nil
}

// raise records that version was written and acknowledged: acked is the
// newest such version.
func raise(acked *atomic.Int64, version int64) {
	for {
		cur := acked.Load()
		if version <= cur || acked.CompareAndSwap(cur, version) {
			return
		}
	}
}

// runWorkers runs workers goroutines for each of nodes nodes, each doing
// ops operations (op, with a random source seeded by its node and
// worker), and fails t with the errors that stopped them.
func runWorkers(t *testing.T, nodes, workers, ops int, op func(rng *rand.Rand, n, w int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, nodes*workers)
	for n := range nodes {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(n), uint64(w)))
				for i := range ops {
					if err := op(rng, n, w); err != nil {
						errs <- fmt.Errorf("node %d worker %d op %d: %w", n+1, w, i, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func openDB(t *testing.T, rows int) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shoal.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec("CREATE TABLE rows (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rows; i++ {
		if _, err := db.Exec("INSERT INTO rows (id, version) VALUES (?, 1)", i); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func rowVersion(t *testing.T, db *sql.DB, id int) int64 {
	var v int64
	if err := db.QueryRow("SELECT version FROM rows WHERE id = ?", id).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
