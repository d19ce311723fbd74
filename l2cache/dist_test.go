package l2cache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// distCaches starts n nodes with consistent stores, partition table
// keepers and DISTRIBUTED caches, and waits until every node has a table
// covering all of them.
// forOwnedModes runs a test of the partitioned map in each mode built on
// it: DISTRIBUTED, and NEAR (DISTRIBUTED with near copies).
func forOwnedModes(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range []string{cluster.CacheModeDistributed, cluster.CacheModeNear} {
		t.Run(mode, func(t *testing.T) { test(t, mode) })
	}
}

// distCaches starts n nodes as nodes run: consistent stores, read leases,
// partition table keepers and caches of mode, and waits until every cache
// can serve.
func distCaches(t *testing.T, seed uint64, n int, mode string) (*memnet.Network, []*clustertest.Member, []*Cache) {
	t.Helper()
	lc := startReady(t, seed, n, mode)
	return lc.net, lc.members, lc.caches
}

// startReady is startLeased with asynchronous invalidation, once every
// cache can serve.
func startReady(t *testing.T, seed uint64, n int, mode string, tweak ...func(*Config)) *leasedCluster {
	t.Helper()
	lc := startLeased(t, seed, n, mode, InvalidationAsync, tweak...)
	for i, c := range lc.caches {
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("node %d's cache ready", i+1), func() bool { return c.Ready() == nil })
	}
	return lc
}

// The stale put race in DISTRIBUTED mode: a reader's load begins, the
// writer commits and invalidates at the owner, the reader's put arrives at
// the owner with its old ticket — and is refused.
func TestDistributedStalePutRefused(t *testing.T) { forOwnedModes(t, testDistributedStalePutRefused) }

func testDistributedStalePutRefused(t *testing.T, mode string) {
	_, _, caches := distCaches(t, 7, 3, mode)
	a, b := region(t, caches[0], "pr", NonstrictReadWrite), region(t, caches[1], "pr", NonstrictReadWrite)
	c3 := region(t, caches[2], "pr", NonstrictReadWrite)
	ctx := context.Background()
	var db atomic.Value
	db.Store("v1")
	release := heldLoad(ctx, b, "1", &db)
	db.Store("v2")
	if err := a.Evict(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	release()
	for i, r := range []*Region{a, b, c3} {
		v, err := r.Get(ctx, "1", func(context.Context) ([]byte, error) { return []byte(db.Load().(string)), nil })
		if err != nil || string(v) != "v2" {
			t.Fatalf("node %d read %q (%v) after the race: the stale put landed", i+1, v, err)
		}
	}
	var refused, remote uint64
	for _, c := range caches {
		refused += c.Stats().Regions["pr"].RefusedPuts
		remote += c.Stats().Node.RemoteCalls
	}
	if refused != 1 || remote == 0 {
		t.Fatalf("refused puts %d (want 1), remote calls %d (want some)", refused, remote)
	}
}

// Every node reads the same entry from its owner: one load cluster-wide,
// then hits everywhere, and an eviction anywhere is seen everywhere.
func TestDistributedSharedEntries(t *testing.T) { forOwnedModes(t, testDistributedSharedEntries) }

func testDistributedSharedEntries(t *testing.T, mode string) {
	_, _, caches := distCaches(t, 8, 3, mode)
	ctx := context.Background()
	var loads atomic.Int32
	var db atomic.Int64
	load := func(context.Context) ([]byte, error) { loads.Add(1); return []byte(fmt.Sprint(db.Load())), nil }
	var regions []*Region
	for _, c := range caches {
		regions = append(regions, region(t, c, "pr", ReadWrite))
	}
	for key := 0; key < 20; key++ {
		for _, r := range regions {
			if _, err := r.Get(ctx, fmt.Sprint(key), load); err != nil {
				t.Fatal(err)
			}
			// A NEAR reader does not wait for its put to be stored (a
			// one-way message): the next node reads once it is.
			testkit.Eventually(t, 10*time.Second, "key "+fmt.Sprint(key)+" stored at its owner", func() bool {
				return ownerHolds(caches, "pr", fmt.Sprint(key))
			})
		}
	}
	if n := loads.Load(); n != 20 {
		t.Fatalf("%d loads for 20 keys read on 3 nodes: entries are not shared", n)
	}
	db.Store(1)
	if err := regions[0].Lock(ctx, "3"); err != nil {
		t.Fatal(err)
	}
	if err := regions[0].Unlock(ctx, "3"); err != nil {
		t.Fatal(err)
	}
	for i, r := range regions {
		if v, _ := r.Get(ctx, "3", load); string(v) != "1" {
			t.Fatalf("node %d read %s after the update", i+1, v)
		}
	}
}

// The randomized SQLite test in DISTRIBUTED mode: an invalidation is
// acknowledged by the owner (and its backup), so every read that starts
// after a write returned sees it.
func TestDistributedRandomizedAgainstSQLite(t *testing.T) {
	forOwnedModes(t, testDistributedRandomizedAgainstSQLite)
}

func testDistributedRandomizedAgainstSQLite(t *testing.T, mode string) {
	_, _, caches := distCaches(t, 9, 3, mode)
	randomizedOn(t, nil, caches, InvalidationSync, ReadWrite)
}

// The randomized SQLite tests with every bound of stamps at its least, so
// that nearly every change folds: an owner's per-key change stamps into
// its partition's ticket floor, its near holder sets into the partition's
// wide set, a node's query-space stamps into its floor. A fold must never
// let a stale put in or a stale copy be served.
func TestRandomizedThroughFolds(t *testing.T) {
	forOwnedModes(t, func(t *testing.T, mode string) {
		t.Run("entities", func(t *testing.T) {
			// The rows' keys share one partition, so that a change of one
			// folds the others' stamps away.
			var keys []string
			for i := 0; len(keys) < 4; i++ {
				if k := fmt.Sprint("row", i); PartitionOf("rows", k, DefaultPartitions) == PartitionOf("rows", "row0", DefaultPartitions) {
					keys = append(keys, k)
				}
			}
			prev := rowKey
			rowKey = func(id int) string { return keys[id] }
			t.Cleanup(func() { rowKey = prev })
			lc := startReady(t, 12, 3, mode, foldAlways(t))
			delayL2(lc.net)
			randomizedOn(t, lc.net, lc.caches, InvalidationSync, NonstrictReadWrite)
			checkFolded(t, lc.caches)
		})
		t.Run("keyed queries", func(t *testing.T) {
			lc := startReady(t, 56, 3, mode, foldAlways(t))
			randomizedKeyed(t, lc)
			checkFolded(t, lc.caches)
		})
	})
}

// foldAlways lowers every bound of stamps to 1 for the test's caches (the
// Config tweak it returns) and puts minHolderBound back when the test
// ends, after its caches are closed.
func foldAlways(t *testing.T) func(*Config) {
	prev := minHolderBound
	minHolderBound = 1
	t.Cleanup(func() { minHolderBound = prev })
	return func(c *Config) { c.MaxInvalidations = 1 }
}

// delayL2 delays the cache's peer messages at random, up to 3 ms each.
func delayL2(net *memnet.Network) {
	net.SetFaults(memnet.Faults{DelayMax: 3 * time.Millisecond, Match: func(tr memnet.Traffic) bool {
		return tr.Kind == memnet.Frame && strings.HasPrefix(tr.Frame.Type, "l2.")
	}})
}

func checkFolded(t *testing.T, caches []*Cache) {
	t.Helper()
	var folds, wide uint64
	for _, c := range caches {
		st := c.Stats().Node
		folds += st.StampFolds
		wide += st.NearDrops[nearDropNames[nearDropFold]]
	}
	t.Logf("%d stamp folds, %d holder folds", folds, wide)
	if folds == 0 {
		t.Fatal("no stamps were folded: the test did not run through a fold")
	}
}

// Kill the owner of a hot key's partition and add a node while writers
// and readers run: no read returns a version older than the last write
// whose invalidation was acknowledged before the read began.
func TestDistributedOwnerKilledAndNodeAdded(t *testing.T) {
	forOwnedModes(t, testDistributedOwnerKilledAndNodeAdded)
}

func testDistributedOwnerKilledAndNodeAdded(t *testing.T, mode string) {
	net, members, caches := distCaches(t, 10, 3, mode)
	ctx := context.Background()
	const key = "hot"
	p := PartitionOf("pr", key, DefaultPartitions)
	owner := distOf(caches[0]).keeper.Table().Owner(p)
	victim := -1
	for i, m := range members {
		if m.Node.Name() == owner {
			victim = i
		}
	}
	var db, acked atomic.Int64
	load := func(context.Context) ([]byte, error) { return []byte(fmt.Sprint(db.Load())), nil }
	var live []*Region
	for i, c := range caches {
		if i != victim {
			live = append(live, region(t, c, "pr", NonstrictReadWrite))
		}
	}
	stop := make(chan struct{})
	errs := make(chan error, 16)
	var late atomic.Int64
	var running sync.WaitGroup
	running.Add(1)
	go func() { // the writer
		defer running.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var v int64
			var err error
			if db.Load()%2 == 0 {
				v = db.Add(1)
				err = live[0].Evict(wctx, key)
			} else if err = live[0].Lock(wctx, key); err == nil {
				// Every other write soft-locks the key and unlocks with
				// its row, which the owner (and its backup, and the near
				// holders) keep: a takeover must never serve it stale.
				v = db.Add(1)
				err = live[0].UnlockWith(wctx, key, []byte(fmt.Sprint(v)))
			}
			cancel()
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrModeChanged) {
				// Not acknowledged: the owner's failure not yet
				// detected, or its partitions not yet moved, within
				// 10 s on a loaded machine (2 of 4 runs at load 30-36);
				// or, when the owner killed was the raft leader, this
				// node's read lease lapsed and the mode record could
				// not be read to confirm the write before a new leader
				// was elected (ErrModeChanged: 1 of 120 runs at load
				// 30). The write is not counted; the client evicts
				// again, as an application would, and each phase still
				// needs its writes acknowledged within a minute.
				late.Add(1)
				continue
			}
			if err != nil {
				errs <- fmt.Errorf("evict after write %d: %w", v, err)
				return
			}
			acked.Store(v)
			time.Sleep(time.Millisecond)
		}
	}()
	for _, r := range live {
		running.Add(1)
		go func() { // a reader
			defer running.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := acked.Load()
				v, err := r.Get(ctx, key, load)
				if err != nil {
					errs <- err
					return
				}
				var got int64
				fmt.Sscan(string(v), &got)
				if got < floor {
					errs <- fmt.Errorf("read version %d after version %d was acknowledged", got, floor)
					return
				}
			}
		}()
	}
	// Each phase lasts until some writes are acknowledged in it, however
	// slow the machine: before the kill, with the owner dead, and with the
	// new node in the table.
	writesMore := func(n int64, what string) {
		want := acked.Load() + n
		testkit.Eventually(t, time.Minute, what, func() bool { return acked.Load() >= want || len(errs) > 0 })
	}
	writesMore(20, "20 writes acknowledged before the kill")
	members[victim].Kill()
	writesMore(15, "15 writes acknowledged after the owner was killed")
	var survivors []*clustertest.Member
	for i, m := range members {
		if i != victim {
			survivors = append(survivors, m)
		}
	}
	added := clustertest.AddMember(t, net, survivors, 4)
	k := newKeeper(t, TableConfig{Node: added.Node, Store: added.Store, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t)})
	lease, err := NewReadLease(LeaseConfig{Name: added.Node.Name(), Store: added.Store, Duration: testLease, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lease.Close)
	newCache := newLocal(t, Config{Mode: mode, Node: added.Node, Keeper: k, Bus: added.Node.Bus(), Lease: lease})
	region(t, newCache, "pr", NonstrictReadWrite)
	testkit.Eventually(t, 15*time.Second, "a table with the new node", func() bool {
		return slices.Contains(tableMembers(distOf(caches[(victim+1)%3]).keeper.Table()), added.Node.Name())
	})
	writesMore(15, "15 writes acknowledged with the new node in the table")
	close(stop)
	running.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if acked.Load() < 50 {
		t.Fatalf("only %d writes acknowledged: the test exercised too little", acked.Load())
	}
	t.Logf("%d writes acknowledged (%d evictions not acknowledged, written again); owner %s killed, %s added",
		acked.Load(), late.Load(), owner, added.Node.Name())
}

// The owners' entries stay within MaxCost, and an entry past its TTL is a
// miss, at the owner and at the backup that takes over from it.
func TestDistributedBudgetAndTTL(t *testing.T) {
	net := memnet.New(11)
	t.Cleanup(func() { net.Close() })
	members := clustertest.StartWithStoresMode(t, net, 2, cluster.CacheModeDistributed)
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	clock := func() time.Time { return *now.Load() }
	const budget = 64 << 10
	caches := make([]*Cache, 2)
	for i, m := range members {
		k := newKeeper(t, TableConfig{Node: m.Node, Store: m.Store, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t), Now: clock})
		caches[i] = newLocal(t, Config{Mode: cluster.CacheModeDistributed, Node: m.Node, Keeper: k, Bus: m.Node.Bus(),
			MaxCost: budget, TTL: time.Minute, Now: clock})
	}
	for _, c := range caches {
		testkit.Eventually(t, 10*time.Second, "a partition table on every node", func() bool {
			return len(tableMembers(distOf(c).keeper.Table())) == 2
		})
	}
	r := region(t, caches[0], "blob", NonstrictReadWrite)
	ctx := context.Background()
	value := make([]byte, 1000)
	for i := range 1000 { // about 1 MB offered, 16 times the budget
		if _, err := r.Get(ctx, strconv.Itoa(i), func(context.Context) ([]byte, error) { return value, nil }); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range caches {
		// A backup applies the puts' replications in batches that leave
		// up to replBatchDelay after the reads (later on a loaded
		// machine), each entry stored and then evicted for: while one is
		// applied the node may hold an entry over its budget. Once they
		// are applied it holds at most its budget.
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("node %d to hold some entries and at most its budget of %d bytes", i+1, budget), func() bool {
			held := distOf(c).bytes.Load()
			return held <= budget && held > 0
		})
		if c.Stats().Node.Evictions == 0 {
			t.Fatalf("node %d evicted nothing", i+1)
		}
	}
	// A recent key is most likely still held: find one that hits.
	loads := 0
	load := func(context.Context) ([]byte, error) { loads++; return value, nil }
	hit := ""
	for i := 999; i >= 900 && hit == ""; i-- {
		before := loads
		if _, err := r.Get(ctx, strconv.Itoa(i), load); err != nil {
			t.Fatal(err)
		}
		if loads == before {
			hit = strconv.Itoa(i)
		}
	}
	if hit == "" {
		t.Fatal("no recent key was held anywhere")
	}
	later := start.Add(2 * time.Minute)
	now.Store(&later)
	before := loads
	if _, err := r.Get(ctx, hit, load); err != nil {
		t.Fatal(err)
	}
	if loads != before+1 {
		t.Fatalf("key %s was served after its TTL", hit)
	}
}

// An entity's put is copied to the partition's backup; a query result's is
// not: a backup that takes over drops the query results it holds
// (dropQueries), so a copy would only cost a message and the backup's
// memory.
func TestDistributedQueryResultsAreNotReplicated(t *testing.T) {
	net := memnet.New(12)
	t.Cleanup(func() { net.Close() })
	members := clustertest.StartWithStoresMode(t, net, 2, cluster.CacheModeDistributed)
	caches := make([]*Cache, 2)
	for i, m := range members {
		k := newKeeper(t, TableConfig{Node: m.Node, Store: m.Store, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t)})
		caches[i] = newLocal(t, Config{Mode: cluster.CacheModeDistributed, Node: m.Node, Keeper: k, Bus: m.Node.Bus()})
	}
	for _, c := range caches {
		testkit.Eventually(t, 10*time.Second, "a partition table on every node, and its cache ready", func() bool {
			return len(tableMembers(distOf(c).keeper.Table())) == 2 && c.Ready() == nil
		})
	}
	ctx := context.Background()
	entities := region(t, caches[0], "rows", NonstrictReadWrite)
	queries, err := caches[0].Region("lists", QueryRegion, NonstrictReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	value := []byte("v")
	load := func(context.Context) ([]byte, error) { return value, nil }
	const n = 64
	for i := range n {
		if _, err := entities.Get(ctx, strconv.Itoa(i), load); err != nil {
			t.Fatal(err)
		}
		if _, err := queries.GetQuery(ctx, "q"+strconv.Itoa(i), []string{"table"}, load); err != nil {
			t.Fatal(err)
		}
	}
	// held counts, over both nodes, the entries of each kind an owner and
	// a backup hold.
	held := func() (ownerRows, ownerQueries, backupRows, backupQueries int) {
		for _, c := range caches {
			d := distOf(c)
			d.mu.Lock()
			parts := maps.Clone(d.parts)
			d.mu.Unlock()
			for _, dp := range parts {
				dp.mu.Lock()
				for _, e := range dp.entries {
					switch {
					case dp.owner && e.query:
						ownerQueries++
					case dp.owner:
						ownerRows++
					case dp.backup && e.query:
						backupQueries++
					case dp.backup:
						backupRows++
					}
				}
				dp.mu.Unlock()
			}
		}
		return
	}
	// The puts' replications travel in batches: wait for the entities'.
	testkit.Eventually(t, 10*time.Second, "every entity put replicated to its backup", func() bool {
		_, _, rows, _ := held()
		return rows == n
	})
	ownerRows, ownerQueries, backupRows, backupQueries := held()
	if ownerRows != n || ownerQueries != n || backupQueries != 0 {
		t.Fatalf("owners hold %d rows and %d query results, backups %d rows and %d query results; want %d, %d, %d, 0",
			ownerRows, ownerQueries, backupRows, backupQueries, n, n, n)
	}
}
