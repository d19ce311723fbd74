package l2cache

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// The tests of this file reproduce the faults of the "never stale under
// faults" argument (doc.go) in process: a node frozen (its memnet host
// isolated and its raft transport cut, as a SIGSTOP would) until the others
// declare it failed, a partition's owner killed, a query-space update that
// is slow to arrive.

// leasedCluster is n members with stores, each with a read lease and a
// cache of one mode.
type leasedCluster struct {
	net     *memnet.Network
	members []*clustertest.Member
	leases  []*ReadLease
	caches  []*Cache
}

// testLease is the lease of these tests: long enough for a loaded
// machine's renewals, short enough that a test waits it out quickly.
const testLease = 2 * time.Second

func startLeased(t testing.TB, seed uint64, n int, mode, invalidation string, tweak ...func(*Config)) *leasedCluster {
	t.Helper()
	lc := &leasedCluster{net: memnet.New(seed)}
	t.Cleanup(func() { lc.net.Close() })
	lc.members = clustertest.StartWithStoresMode(t, lc.net, n, mode)
	for _, m := range lc.members {
		l, err := NewReadLease(LeaseConfig{Name: m.Node.Name(), Store: m.Store, Duration: testLease, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		cfg := Config{Mode: mode, Node: m.Node, Bus: m.Node.Bus(), Invalidation: invalidation, Lease: l}
		for _, f := range tweak {
			f(&cfg)
		}
		if mode != cluster.CacheModeLocal {
			k := newKeeper(t, TableConfig{Node: m.Node, Store: m.Store, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t)})
			cfg.Keeper = k
		}
		lc.leases = append(lc.leases, l)
		lc.caches = append(lc.caches, newLocal(t, cfg))
	}
	for i, l := range lc.leases {
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("node %d's read lease", i+1), l.Valid)
		if c := lc.caches[i]; distOf(c) != nil {
			testkit.Eventually(t, 10*time.Second, "a partition table with every node", func() bool {
				return len(tableMembers(distOf(c).keeper.Table())) == n
			})
		}
	}
	return lc
}

// follower is a member that does not lead the raft group.
func (lc *leasedCluster) follower(t *testing.T, not ...int) int {
	t.Helper()
	for i, m := range lc.members {
		if m.Store.Status().Role != "leader" && !slices.Contains(not, i) {
			return i
		}
	}
	t.Fatal("no follower")
	return -1
}

// freeze cuts member i off from everything, gossip, peer RPC and raft.
func (lc *leasedCluster) freeze(i int) {
	lc.net.Isolate(clustertest.Host(i + 1))
	lc.members[i].Raft.DisconnectAll()
	for j, o := range lc.members {
		if j != i {
			o.Raft.Disconnect(lc.members[i].Raft.LocalAddr())
		}
	}
}

// thaw undoes freeze.
func (lc *leasedCluster) thaw(i int) {
	lc.net.Heal()
	for j, o := range lc.members {
		if j != i {
			o.Raft.Connect(lc.members[i].Raft.LocalAddr(), lc.members[i].Raft)
			lc.members[i].Raft.Connect(o.Raft.LocalAddr(), o.Raft)
		}
	}
}

// waitFailed waits until every member but i sees i as not alive.
func (lc *leasedCluster) waitFailed(t *testing.T, i int) {
	t.Helper()
	name := lc.members[i].Node.Name()
	for j, m := range lc.members {
		if j == i {
			continue
		}
		testkit.Eventually(t, 20*time.Second, name+" marked failed", func() bool {
			for _, mb := range m.Node.Members() {
				if mb.Name == name {
					return mb.State != cluster.StateAlive
				}
			}
			return true
		})
	}
}

// counter is a row whose version the loaders read.
type counter struct{ v, loads atomic.Int64 }

func (c *counter) load(context.Context) ([]byte, error) {
	c.loads.Add(1)
	return []byte(fmt.Sprint(c.v.Load())), nil
}

// prime reads the row through get until a read is a hit: the cache holds
// it (a new owner, say, serves nothing for a lease after it took over).
func (c *counter) prime(t *testing.T, what string, get func() error) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, what+" cached", func() bool {
		before := c.loads.Load()
		if err := get(); err != nil {
			t.Fatal(err)
		}
		return c.loads.Load() == before
	})
}

func (c *counter) is(b []byte) bool { return string(b) == fmt.Sprint(c.v.Load()) }

// A node frozen until the others declare it failed misses the writes made
// meanwhile. When it comes back, neither the reads that were waiting nor
// any later one may be answered from what it cached before: LOCAL sync and
// DISTRIBUTED alike.
func TestFrozenNodeServesNothingStale(t *testing.T) {
	for _, tc := range []struct{ mode, inv string }{
		{cluster.CacheModeLocal, InvalidationSync},
		{cluster.CacheModeDistributed, InvalidationAsync},
		{cluster.CacheModeNear, InvalidationAsync},
	} {
		t.Run(tc.mode+"-"+tc.inv, func(t *testing.T) {
			lc := startLeased(t, 21, 3, tc.mode, tc.inv)
			ctx := context.Background()
			var rows [8]counter
			regions := make([]*Region, 3)
			for i, c := range lc.caches {
				regions[i] = region(t, c, "pr", NonstrictReadWrite)
			}
			victim := lc.follower(t)
			writer := (victim + 1) % 3
			for k := range rows {
				for i, r := range regions {
					rows[k].prime(t, fmt.Sprintf("key %d on node %d", k, i+1), func() error {
						_, err := r.Get(ctx, fmt.Sprint(k), rows[k].load)
						return err
					})
				}
			}
			lc.freeze(victim)
			lc.waitFailed(t, victim)
			for k := range rows {
				rows[k].v.Add(1)
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				err := regions[writer].Evict(wctx, fmt.Sprint(k))
				cancel()
				if err != nil {
					t.Fatalf("write %d not acknowledged: %v", k, err)
				}
			}
			lc.thaw(victim)
			// Every read from here on started after every write was
			// acknowledged: none may see an old version, from any node,
			// while the victim reconciles and after.
			deadline := time.Now().Add(3 * testLease)
			for round := 0; time.Now().Before(deadline) || round < 3; round++ {
				for k := range rows {
					for i, r := range regions {
						v, err := r.Get(ctx, fmt.Sprint(k), rows[k].load)
						if err != nil {
							t.Fatal(err)
						}
						if !rows[k].is(v) {
							var where string
							if d := distOf(lc.caches[i]); d != nil {
								tab := d.keeper.Table()
								where = fmt.Sprintf(" (its table: epoch %d, owner %s; lease valid %v)", tab.Epoch,
									tab.Owner(PartitionOf("pr", fmt.Sprint(k), len(tab.Replicas))), lc.leases[i].Valid())
							}
							t.Fatalf("round %d: node %d (victim %d) read key %d = %s after version %d was acknowledged%s",
								round, i+1, victim+1, k, v, rows[k].v.Load(), where)
						}
					}
				}
			}
		})
	}
}

// Missed query-space updates make every cached query result a miss — over
// spaces this node has never seen an update of too.
func TestMissedSpaceUpdatesInvalidateUnseenSpaces(t *testing.T) {
	c := newLocal(t, Config{})
	q, err := c.Region("q", QueryRegion, NonstrictReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var loads atomic.Int32
	load := func(context.Context) ([]byte, error) { loads.Add(1); return []byte("page"), nil }
	testkit.Eventually(t, 5*time.Second, "a cached query result", func() bool {
		before := loads.Load()
		q.GetQuery(ctx, "comments-of-1", []string{"comments"}, load)
		c.waitLocal()
		return loads.Load() == before
	})
	c.onMissed(cluster.Missed{From: "n2", Topic: Topic, Reason: cluster.MissedGap})
	before := loads.Load()
	if _, err := q.GetQuery(ctx, "comments-of-1", []string{"comments"}, load); err != nil {
		t.Fatal(err)
	}
	if loads.Load() != before+1 {
		t.Fatal("a query result over a space this node never saw updated was served after missed space updates")
	}
}

// queryOwnedBy finds a query key of region "q" whose owner is member o.
func queryOwnedBy(t *testing.T, c *Cache, owner string) string {
	t.Helper()
	tab := distOf(c).keeper.Table()
	for i := range 10_000 {
		key := fmt.Sprint("comments-of-", i)
		if tab.Owner(PartitionOf("q", key, len(tab.Replicas))) == owner {
			return key
		}
	}
	t.Fatal("no key owned by " + owner)
	return ""
}

// DISTRIBUTED: a query result cached before an update of its spaces is
// never served again — not when the update's message is slow to reach the
// owner (the update is acknowledged only once every node applied it), and
// not after the owner dies and its backup takes the partition over.
func TestDistributedQueryResultsAfterSpaceUpdate(t *testing.T) {
	forOwnedModes(t, testDistributedQueryResultsAfterSpaceUpdate)
}

func testDistributedQueryResultsAfterSpaceUpdate(t *testing.T, mode string) {
	for _, fault := range []string{"slow-update", "owner-killed"} {
		t.Run(fault, func(t *testing.T) {
			lc := startLeased(t, 22, 3, mode, InvalidationAsync)
			ctx := context.Background()
			qs := make([]*Region, 3)
			for i, c := range lc.caches {
				var err error
				if qs[i], err = c.Region("q", QueryRegion, NonstrictReadWrite); err != nil {
					t.Fatal(err)
				}
			}
			owner := lc.follower(t)
			writer := (owner + 1) % 3
			key := queryOwnedBy(t, lc.caches[writer], lc.members[owner].Node.Name())
			var page counter
			spaces := []string{"comments"}
			for i, q := range qs {
				page.prime(t, fmt.Sprintf("the query on node %d", i+1), func() error {
					_, err := q.GetQuery(ctx, key, spaces, page.load)
					return err
				})
			}
			if fault == "slow-update" {
				ownerHost := clustertest.Host(owner + 1)
				lc.net.SetFaults(memnet.Faults{DelayMin: time.Second, Match: func(tr memnet.Traffic) bool {
					return tr.Kind == memnet.Frame && tr.To == ownerHost && (tr.Frame.Type == "bus" || tr.Frame.Type == "bus.sync")
				}})
			}
			page.v.Add(1)
			if err := lc.caches[writer].UpdateSpaces(ctx, spaces...); err != nil {
				t.Fatal(err)
			}
			if fault == "owner-killed" {
				lc.members[owner].Kill()
				testkit.Eventually(t, 20*time.Second, "a table without the dead owner", func() bool {
					return !slices.Contains(tableMembers(distOf(lc.caches[writer]).keeper.Table()), lc.members[owner].Node.Name())
				})
			}
			skip := -1
			if fault == "owner-killed" {
				skip = owner
			}
			readsFresh(t, qs, skip, key, spaces, &page, 2*testLease)
		})
	}
}

// readsFresh reads query key through every region of qs but skip's, over
// and over for d, and fails t if any read is older than page's version.
func readsFresh(t *testing.T, qs []*Region, skip int, key string, spaces []string, page *counter, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for i, q := range qs {
			if i == skip {
				continue
			}
			v, err := q.GetQuery(ctx, key, spaces, page.load)
			if err != nil {
				t.Fatal(err)
			}
			if !page.is(v) {
				t.Fatalf("node %d served query result version %s after version %d's space update was acknowledged", i+1, v, page.v.Load())
			}
		}
	}
}

// The lease's own rules: a node excluded by a writer drops its cache and
// serves nothing before it has activated again and a lease has passed.
func TestExcludedNodeReactivates(t *testing.T) {
	lc := startLeased(t, 23, 3, cluster.CacheModeLocal, InvalidationSync)
	victim := lc.follower(t)
	writer := (victim + 1) % 3
	resets := lc.caches[victim].Stats().Node.Resets
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := lc.leases[writer].Exclude(ctx, []string{lc.members[victim].Node.Name()}); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < testLease {
		t.Fatalf("Exclude returned after %v, before a lease (%v) had passed", waited, testLease)
	}
	// The victim finds out at its next renewal, resets, and is valid again
	// a lease after it activated.
	testkit.Eventually(t, 20*time.Second, "the excluded node to reset", func() bool {
		return lc.caches[victim].Stats().Node.Resets > resets
	})
	testkit.Eventually(t, 20*time.Second, "the excluded node's lease again", lc.leases[victim].Valid)
	holders, err := lc.leases[writer].Holders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(holders) != 3 {
		t.Fatalf("holders after reactivation: %v", holders)
	}
}
