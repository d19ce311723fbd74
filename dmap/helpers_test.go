package dmap

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

const testLease = time.Second

// invLog records what OnInvalidate was told on one node.
type invLog struct {
	mu       sync.Mutex
	keys     map[string]int
	all      int // partition-wide or node-wide invalidations
	nodeWide int // node-wide ones (every partition)
}

func (l *invLog) on(p int, keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if keys == nil {
		l.all++
		if p < 0 {
			l.nodeWide++
		}
		return
	}
	for _, k := range keys {
		l.keys[k]++
	}
}

func (l *invLog) nodeWideCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nodeWide
}

func (l *invLog) count(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys[key]
}

type testCluster struct {
	net     *memnet.Network
	members []*clustertest.Member
	maps    []*DMap
	invs    []*invLog
	leases  []*l2cache.ReadLease
}

// start runs n nodes as a node runs them: stores, read leases, table
// keepers with backups, and maps; it waits until every map's table has
// every node and every lease is valid, and a lease more so that owners
// serve.
func start(t *testing.T, seed uint64, n, backups int, tweak func(*Config)) *testCluster {
	t.Helper()
	tc := &testCluster{net: memnet.New(seed)}
	t.Cleanup(func() { tc.net.Close() })
	tc.members = clustertest.StartWithStores(t, tc.net, n)
	for _, m := range tc.members {
		l, err := l2cache.NewReadLease(l2cache.LeaseConfig{Name: m.Node.Name(), Store: m.Store, Duration: testLease, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		k, err := l2cache.NewTableKeeper(l2cache.TableConfig{Node: m.Node, Store: m.Store, Backups: backups, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		inv := &invLog{keys: map[string]int{}}
		cfg := Config{Node: m.Node, Keeper: k, Lease: l, OnInvalidate: inv.on, Logger: testkit.Logger(t)}
		if tweak != nil {
			tweak(&cfg)
		}
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		tc.maps, tc.invs, tc.leases = append(tc.maps, d), append(tc.invs, inv), append(tc.leases, l)
	}
	for i, d := range tc.maps {
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("node %d's lease and table", i+1), func() bool {
			return tc.leases[i].Valid() && tableHas(d.Table(), n) && d.Table().Epoch == tc.maps[0].Table().Epoch
		})
	}
	return tc
}

func tableHas(t *l2cache.PartitionTable, n int) bool {
	seen := map[string]bool{}
	for _, r := range t.Replicas {
		for _, m := range r {
			seen[m] = true
		}
	}
	return len(seen) == n
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// do runs one op and fails the test on a call error.
func do(t *testing.T, d *DMap, o Op) Result {
	t.Helper()
	rs, err := d.Do(ctx(t), []Op{o}, DoOptions{})
	if err != nil {
		t.Fatalf("%v on %s: %v", o.Code, o.Key, err)
	}
	return rs[0]
}

// write runs a write until it is acknowledged (a table change under a
// loaded machine's flapping membership may leave one unconfirmed).
func write(t *testing.T, d *DMap, o Op) Result {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := do(t, d, o)
		if r.Err != ErrNotAcked || time.Now().After(deadline) {
			return r
		}
	}
}

func set(key, v string) Op { return Op{Code: CodeSet, Key: key, Args: [][]byte{[]byte(v)}} }
func get(key string) Op    { return Op{Code: CodeGet, Key: key} }

// keyOwnedBy finds a key whose partition's owner is member.
func keyOwnedBy(d *DMap, member, prefix string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if d.Owner(PartitionOf(k, d.Partitions())) == member {
			return k
		}
	}
}
