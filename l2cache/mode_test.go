package l2cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// modeCluster is n nodes as a server runs them: stores, read leases,
// table keepers, caches and mode keepers.
type modeCluster struct {
	net     *memnet.Network
	members []*clustertest.Member
	caches  []*Cache
	keepers []*ModeKeeper
}

func startModeCluster(t *testing.T, seed uint64, n int, modes ...string) *modeCluster {
	t.Helper()
	mc := &modeCluster{net: memnet.New(seed)}
	t.Cleanup(func() { mc.net.Close() })
	mc.members = clustertest.StartWithStoresMode(t, mc.net, n, cluster.CacheModeLocal)
	for i, m := range mc.members {
		mode := modes[i%len(modes)]
		l, err := NewReadLease(LeaseConfig{Name: m.Node.Name(), Store: m.Store, Duration: testLease, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		k := newKeeper(t, TableConfig{Node: m.Node, Store: m.Store, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t)})
		c := newLocal(t, Config{Mode: mode, Node: m.Node, Bus: m.Node.Bus(), Keeper: k, Lease: l,
			Invalidation: InvalidationSync, Logger: testkit.Logger(t)})
		mk, err := NewModeKeeper(ModeConfig{Name: m.Node.Name(), Store: m.Store, Cache: c, Lease: l,
			Initial: mode, Poll: 20 * time.Millisecond, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(mk.Close)
		mc.caches, mc.keepers = append(mc.caches, c), append(mc.keepers, mk)
	}
	for i, c := range mc.caches {
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("node %d's cache ready", i+1), func() bool { return c.Ready() == nil })
	}
	return mc
}

// versionedDB is the system of record of the switching test: a version
// per key, and the newest version a write of it was acknowledged for.
type versionedDB struct {
	mu    sync.Mutex
	rows  map[string]int
	acked map[string]int
}

func (db *versionedDB) load(key string) Loader {
	return func(context.Context) ([]byte, error) {
		db.mu.Lock()
		defer db.mu.Unlock()
		return []byte(strconv.Itoa(db.rows[key])), nil
	}
}

// TestLiveModeSwitch switches a 3-node cluster LOCAL → DISTRIBUTED → NEAR
// → LOCAL under writes and reads through every node: no operation fails
// and no read that began after a write was acknowledged returns an older
// version.
func TestLiveModeSwitch(t *testing.T) {
	mc := startModeCluster(t, 11, 3, cluster.CacheModeLocal)
	regions := make([]*Region, len(mc.caches))
	for i, c := range mc.caches {
		regions[i] = region(t, c, "pr", NonstrictReadWrite)
	}
	db := &versionedDB{rows: map[string]int{}, acked: map[string]int{}}
	const keys = 20
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// A failed switch ends the test with t.Fatalf: the workload stops
	// before the cluster does (cleanups run last first), instead of
	// reading from nodes being torn down and reporting that as stale.
	t.Cleanup(func() { stop(); wg.Wait() })
	var reads, writes, hits, stale, failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				key := strconv.Itoa(rng.IntN(keys))
				db.mu.Lock()
				db.rows[key]++
				v := db.rows[key]
				db.mu.Unlock()
				if err := regions[rng.IntN(len(regions))].Evict(context.Background(), key); err != nil {
					fail(fmt.Errorf("write %s=%d: %w", key, v, err))
					continue
				}
				writes.Add(1)
				db.mu.Lock()
				db.acked[key] = max(db.acked[key], v)
				db.mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	for rd := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(rd), 2))
			for ctx.Err() == nil {
				key := strconv.Itoa(rng.IntN(keys))
				db.mu.Lock()
				floor := db.acked[key]
				db.mu.Unlock()
				loaded := false
				load := db.load(key)
				b, err := regions[rng.IntN(len(regions))].Get(context.Background(), key, func(ctx context.Context) ([]byte, error) {
					loaded = true
					return load(ctx)
				})
				if err != nil {
					fail(fmt.Errorf("read %s: %w", key, err))
					continue
				}
				reads.Add(1)
				if !loaded {
					hits.Add(1)
				}
				if got, _ := strconv.Atoi(string(b)); got < floor {
					stale.Add(1)
					t.Errorf("stale read of %s: %d after %d was acknowledged (mode %v)", key, got, floor, mc.caches[0].ModeStatus())
				}
			}
		}()
	}
	for _, mode := range []string{cluster.CacheModeDistributed, cluster.CacheModeNear, cluster.CacheModeLocal} {
		time.Sleep(300 * time.Millisecond) // let the workload run in the mode
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		start := time.Now()
		// SetMode may be called again after an error: it finishes a
		// switch to the same mode already under way (a loaded machine's
		// "leadership lost" left one's outcome open, as a client sees).
		rec, err := SetMode(sctx, mc.members[1].Store, mode)
		for err != nil && sctx.Err() == nil {
			t.Logf("switch to %s: %v; again", mode, err)
			time.Sleep(100 * time.Millisecond)
			rec, err = SetMode(sctx, mc.members[1].Store, mode)
		}
		cancel()
		if err != nil {
			t.Fatalf("switch to %s: %v", mode, err)
		}
		t.Logf("switched to %v in %v (reads %d, writes %d)", rec, time.Since(start), reads.Load(), writes.Load())
		for i, c := range mc.caches {
			testkit.Eventually(t, 30*time.Second, fmt.Sprintf("node %d in %s", i+1, mode), func() bool {
				s := c.ModeStatus()
				return s.Mode == mode && s.Phase == PhaseStable
			})
		}
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	t.Logf("reads %d (hits %d), writes %d, stale %d, failed %d", reads.Load(), hits.Load(), writes.Load(), stale.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d operations failed; the first: %v", failed.Load(), firstErr.Load())
	}
	if hits.Load() == 0 || writes.Load() == 0 {
		t.Fatalf("the workload did not exercise the cache: %d hits, %d writes", hits.Load(), writes.Load())
	}
}

// A node configured with another mode adopts the cluster's, and a switch
// to the mode already run, or while one is under way, says so.
func TestNodeAdoptsClusterMode(t *testing.T) {
	mc := startModeCluster(t, 12, 3, cluster.CacheModeDistributed, cluster.CacheModeLocal, cluster.CacheModeNear)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rec, err := ReadMode(ctx, mc.members[0].Store)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range mc.caches {
		if s := c.ModeStatus(); s.Mode != rec.Mode || s.Epoch != rec.Epoch {
			t.Errorf("node %d runs %v, the cluster %v", i+1, s, rec)
		}
	}
	if got, err := SetMode(ctx, mc.members[2].Store, rec.Mode); err != nil || got.Epoch != rec.Epoch {
		t.Errorf("switching to the mode run: %v, %v", got, err)
	}
	if _, err := SetMode(ctx, mc.members[2].Store, "far"); err == nil {
		t.Error("switching to an unknown mode succeeded")
	}
	other := cluster.CacheModeLocal
	if rec.Mode == other {
		other = cluster.CacheModeNear
	}
	// A switch under way refuses another target. (The keepers are
	// stopped so that the switch stays under way.)
	for _, k := range mc.keepers {
		k.Close()
	}
	kv, err := mc.members[0].Store.Get(ctx, ModeKey)
	if err != nil {
		t.Fatal(err)
	}
	dual := ModeRecord{Mode: other, From: rec.Mode, Phase: PhaseDual, Epoch: rec.Epoch + 1}
	b, _ := msgpack.Marshal(&dual)
	if _, err := mc.members[0].Store.CompareAndSet(ctx, ModeKey, kv.Version, b); err != nil {
		t.Fatal(err)
	}
	var third string
	for _, m := range []string{cluster.CacheModeLocal, cluster.CacheModeDistributed, cluster.CacheModeNear} {
		if m != rec.Mode && m != other {
			third = m
		}
	}
	if _, err := SetMode(ctx, mc.members[1].Store, third); !errors.Is(err, ErrSwitching) {
		t.Errorf("a second switch during one: %v", err)
	}
	if r, err := ReadMode(ctx, mc.members[2].Store); err != nil || r.Phase != PhaseDual || r.Mode != other || r.From != rec.Mode {
		t.Errorf("the record under way: %v, %v", r, err)
	}
}

// A node that does not acknowledge a phase is excluded through its read
// lease and the switch completes without it; when it comes back it adopts
// the mode before it serves.
func TestModeSwitchExcludesFrozenNode(t *testing.T) {
	mc := startModeCluster(t, 13, 3, cluster.CacheModeLocal)
	for _, k := range mc.keepers {
		k.cfg.PhaseTimeout = 3 * time.Second
	}
	lc := &leasedCluster{net: mc.net, members: mc.members}
	i := lc.follower(t)
	lc.freeze(i)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	leader := (i + 1) % 3
	if _, err := SetMode(ctx, mc.members[leader].Store, cluster.CacheModeDistributed); err != nil {
		t.Fatalf("switch with a frozen node: %v", err)
	}
	if err := mc.caches[i].Ready(); err == nil {
		t.Fatalf("the frozen node is ready while the cluster switched without it")
	}
	lc.thaw(i)
	testkit.Eventually(t, 60*time.Second, "the thawed node to adopt DISTRIBUTED and serve", func() bool {
		return mc.caches[i].ModeStatus().Mode == cluster.CacheModeDistributed && mc.caches[i].Ready() == nil
	})
}

// switchTo sets the cluster's mode to m and waits until every node runs
// it, stable and ready.
func (mc *modeCluster) switchTo(ctx context.Context, t *testing.T, m string) {
	t.Helper()
	rec, err := SetMode(ctx, mc.members[0].Store, m)
	for err != nil && ctx.Err() == nil {
		t.Logf("switch to %s: %v; again", m, err)
		time.Sleep(100 * time.Millisecond)
		rec, err = SetMode(ctx, mc.members[0].Store, m)
	}
	if err != nil {
		t.Fatalf("switch to %s: %v", m, err)
	}
	for i, c := range mc.caches {
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("node %d in %s", i+1, m), func() bool {
			s := c.ModeStatus()
			return s.Mode == m && s.Phase == PhaseStable && s.Epoch >= rec.Epoch && c.Ready() == nil
		})
	}
}

// secondReadLoads reads key through every region twice and returns how
// many of the second reads loaded: 0 when each node kept what it read.
func (mc *modeCluster) secondReadLoads(ctx context.Context, t *testing.T, regions []*Region, key string) int64 {
	t.Helper()
	var loads atomic.Int64
	load := func(context.Context) ([]byte, error) {
		loads.Add(1)
		return []byte("v"), nil
	}
	read := func() {
		for i, r := range regions {
			if _, err := r.Get(ctx, key, load); err != nil {
				t.Fatalf("node %d: %v", i+1, err)
			}
		}
	}
	read()
	for _, c := range mc.caches {
		c.waitLocal() // ristretto applies sets in the background
	}
	before := loads.Load()
	read()
	return loads.Load() - before
}

// A write whose soft lock reached a mode and whose unlock did not (the
// lock under one view, the unlock after the cluster stopped writing to
// that mode) leaves nothing locked when the mode is run again: each mode
// is run twice, and its key's reads after the second entry are kept, as
// before any switch. Without dropping a retired mode's locks, the key
// stayed locked for LockTimeout, every read of it loaded, and nothing
// was kept.
func TestSwitchDropsLeftLocks(t *testing.T) {
	for _, mode := range []string{cluster.CacheModeNear, cluster.CacheModeDistributed, cluster.CacheModeLocal} {
		t.Run(mode, func(t *testing.T) {
			other := cluster.CacheModeLocal
			if mode == cluster.CacheModeLocal {
				other = cluster.CacheModeDistributed
			}
			mc := startModeCluster(t, 23, 3, mode)
			regions := regionsOn(t, mc.caches, "pr", ReadWrite)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const key = "k"
			// Locked in mode, unlocked after the cluster moved to other.
			if err := regions[1].Lock(ctx, key); err != nil {
				t.Fatal(err)
			}
			mc.switchTo(ctx, t, other)
			if err := regions[1].Unlock(ctx, key); err != nil {
				t.Fatal(err)
			}
			mc.switchTo(ctx, t, mode)
			if n := mc.secondReadLoads(ctx, t, regions, key); n != 0 {
				t.Fatalf("%s, entered again: the second read of each node loaded %d times; the key is still locked", mode, n)
			}
		})
	}
}

// A soft lock that reaches a mode's owner after the owner stopped using
// the mode (its writer still under a view that wrote there; its unlock,
// under the next, goes elsewhere) is not held: when the mode is run
// again within LockTimeout, the key's reads are kept, as before any
// switch. Held, the late lock outlived the dropLocks of the switch, and
// every read of the key loaded until LockTimeout.
func TestSwitchIgnoresLateLock(t *testing.T) {
	for _, mode := range []string{cluster.CacheModeNear, cluster.CacheModeDistributed} {
		t.Run(mode, func(t *testing.T) {
			mc := startModeCluster(t, 29, 3, mode)
			regions := regionsOn(t, mc.caches, "pr", ReadWrite)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const key = "k"
			mc.switchTo(ctx, t, cluster.CacheModeLocal)
			// The late lock, as the owner's handler applies it.
			locked := 0
			for i, c := range mc.caches {
				d := c.backends[beDist].(*dist)
				p := d.partition("pr", key)
				if dp, _ := d.part(p); !dp.owner {
					continue
				}
				rep := d.apply(ctx, mc.members[(i+1)%len(mc.members)].Node.Name(), distOp{Kind: kindLock, Partition: p, Region: "pr", Key: key})
				if rep.NotOwner || rep.Unavailable || rep.Refused {
					t.Fatalf("node %d: the late lock was not applied: %+v", i+1, rep)
				}
				locked++
			}
			if locked != 1 {
				t.Fatalf("%d owners of the key's partition, want 1", locked)
			}
			for i, c := range mc.caches {
				d := c.backends[beDist].(*dist)
				for _, dp := range d.allParts() {
					dp.mu.Lock()
					n := len(dp.locks)
					dp.mu.Unlock()
					if n != 0 {
						t.Fatalf("node %d holds %d soft locks of a mode no node reads", i+1, n)
					}
				}
			}
			mc.switchTo(ctx, t, mode)
			if n := mc.secondReadLoads(ctx, t, regions, key); n != 0 {
				t.Fatalf("%s, entered again: the second read of each node loaded %d times; the late lock is held", mode, n)
			}
		})
	}
}
