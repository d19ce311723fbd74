package rest_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

// Two nodes in LOCAL mode on one in-memory network, sharing the SQLite
// file: a write through A is seen by B's next read once the invalidation
// arrives — at once with sync invalidation, within the bus delay with
// async.
func TestTwoNodesSeeEachOthersWrites(t *testing.T) {
	for _, inv := range []string{l2cache.InvalidationSync, l2cache.InvalidationAsync} {
		t.Run(inv, func(t *testing.T) { twoNodes(t, inv) })
	}
}

func twoNodes(t *testing.T, inv string) {
	net := memnet.New(11)
	t.Cleanup(func() { net.Close() })
	members := clustertest.Start(t, net, 2, nil)
	path := domaintest.Path(t)
	w := seedWorld(t, path)
	var nodes []*node
	for _, m := range members {
		c := newLocalCache(t, l2cache.Config{Bus: m.Bus(), Invalidation: inv})
		nodes = append(nodes, startNode(t, path, c, w))
	}
	writeOnAReadOnB(t, nodes[0], nodes[1], w, inv == l2cache.InvalidationSync)
	if nodes[1].cache.Stats().Node.InvalidationsReceived == 0 {
		t.Fatal("B received no invalidation: were its reads cached at all?")
	}
	concurrentUpdates(t, nodes[0], nodes[1], w)
}

// The same over DISTRIBUTED caches: three members with partition tables;
// every read that starts after a write returned sees it. Entity
// invalidations are applied at the key's owner before the write returns
// in either invalidation mode, but query-space updates travel on the bus:
// with async invalidation a cached list at another owner may lag (which
// is why this test uses sync).
func TestDistributedNodesSeeEachOthersWrites(t *testing.T) {
	net := memnet.New(12)
	t.Cleanup(func() { net.Close() })
	members := clustertest.StartWithStoresMode(t, net, 3, cluster.CacheModeDistributed)
	path := domaintest.Path(t)
	w := seedWorld(t, path)
	var nodes []*node
	var keepers []*l2cache.TableKeeper
	for _, m := range members {
		k, err := l2cache.NewTableKeeper(l2cache.TableConfig{Node: m.Node, Store: m.Store, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		keepers = append(keepers, k)
		c := newLocalCache(t, l2cache.Config{Mode: cluster.CacheModeDistributed, Node: m.Node, Keeper: k, Bus: m.Node.Bus(),
			Invalidation: l2cache.InvalidationSync})
		nodes = append(nodes, startNode(t, path, c, w))
	}
	for _, k := range keepers {
		testkit.Eventually(t, 10*time.Second, "a partition table of all three nodes", func() bool {
			return tableSize(k.Table()) == 3
		})
	}
	writeOnAReadOnB(t, nodes[0], nodes[1], w, true)
	concurrentUpdates(t, nodes[1], nodes[2], w)
	var remote uint64
	for _, n := range nodes {
		remote += n.cache.Stats().Node.RemoteCalls
	}
	if remote == 0 {
		t.Fatal("no remote cache calls in DISTRIBUTED mode")
	}
}

// writeOnAReadOnB updates a pull request and comments through A, and reads
// both through B, which cached them before: immediately when sync, else
// eventually.
func writeOnAReadOnB(t *testing.T, a, b *node, w *world, sync bool) {
	id := w.prs[2]
	warm(t, b, prPath(id))
	warm(t, b, prPath(id)+"/comments")
	for round := int64(0); round < 5; round++ {
		title := fmt.Sprintf("round %d", round)
		a.do(t, "PUT", prPath(id), "writer", jsonBody(map[string]any{"version": round, "title": title})).want(t, 200)
		a.do(t, "POST", prPath(id)+"/comments", "writer", jsonBody(map[string]any{"text": title})).want(t, 201)
		var got pr
		var cs page[struct{ Text string }]
		seen := func() bool {
			b.do(t, "GET", prPath(id), "reader", nil).want(t, 200).decode(t, &got)
			b.do(t, "GET", prPath(id)+"/comments", "reader", nil).want(t, 200).decode(t, &cs)
			return got.Title == title && got.Version == round+1 && cs.Size == int(round)+1 && cs.Values[round].Text == title
		}
		if sync {
			if !seen() {
				t.Fatalf("round %d: B read stale state right after A's write returned (sync invalidation): %+v, %+v", round, got, cs)
			}
			continue
		}
		testkit.Eventually(t, 5*time.Second, "B to see A's write", seen)
	}
	// A project created through A is in B's cached project list.
	var before page[struct{ Key string }]
	warm(t, b, "/projects")
	b.do(t, "GET", "/projects", "reader", nil).want(t, 200).decode(t, &before)
	a.do(t, "POST", "/projects", "root", jsonBody(map[string]any{"key": "ZETA", "name": "Zeta"})).want(t, 201)
	listed := func() bool {
		var p page[struct{ Key string }]
		b.do(t, "GET", "/projects", "reader", nil).want(t, 200).decode(t, &p)
		return p.Size == before.Size+1 && p.Values[p.Size-1].Key == "ZETA"
	}
	if sync && !listed() {
		t.Fatal("B's project list lacks the project A just created (sync invalidation)")
	}
	testkit.Eventually(t, 5*time.Second, "B to list A's new project", listed)
}

// concurrentUpdates sends the same-version update through A and B at
// once, several times: exactly one 200 and one 409 each time, and both
// nodes then read the winner's title.
func concurrentUpdates(t *testing.T, a, b *node, w *world) {
	id := w.prs[4]
	var cur pr
	a.do(t, "GET", prPath(id), "reader", nil).want(t, 200).decode(t, &cur)
	for round := 0; round < 5; round++ {
		statuses := make([]int, 2)
		titles := make([]string, 2)
		done := make(chan struct{})
		for i, n := range []*node{a, b} {
			titles[i] = fmt.Sprintf("node %d round %d", i, round)
			go func() {
				defer func() { done <- struct{}{} }()
				statuses[i] = n.do(t, "PUT", prPath(id), "writer", jsonBody(map[string]any{"version": cur.Version, "title": titles[i]})).status
			}()
		}
		<-done
		<-done
		winner := slices.Index(statuses, 200)
		if winner < 0 || statuses[1-winner] != 409 {
			t.Fatalf("round %d: statuses %v, want one 200 and one 409", round, statuses)
		}
		for _, n := range []*node{a, b} {
			n.do(t, "GET", prPath(id), "reader", nil).want(t, 200).decode(t, &cur)
			if cur.Title != titles[winner] {
				t.Fatalf("round %d: a node reads %q after %q won", round, cur.Title, titles[winner])
			}
		}
	}
}

// warm reads path on n until the cache serves it.
func warm(t *testing.T, n *node, path string) {
	t.Helper()
	before := n.cache.Stats().Regions
	testkit.Eventually(t, 5*time.Second, "B to cache "+path, func() bool {
		n.do(t, "GET", path, "reader", nil).want(t, 200)
		now := n.cache.Stats().Regions
		for name, st := range now {
			if st.Hits > before[name].Hits {
				return true
			}
		}
		return false
	})
}

// tableSize is the number of distinct owners and backups in a table.
func tableSize(tb *l2cache.PartitionTable) int {
	if tb == nil {
		return 0
	}
	seen := map[string]bool{}
	for _, rs := range tb.Replicas {
		for _, r := range rs {
			seen[r] = true
		}
	}
	return len(seen)
}
