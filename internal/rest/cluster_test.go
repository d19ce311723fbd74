package rest_test

import (
	"fmt"
	"testing"
	"time"

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
	a, b := nodes[0], nodes[1]
	id := w.prs[2]
	warm(t, b, prPath(id))
	warm(t, b, prPath(id)+"/comments")
	for round := int64(0); round < 5; round++ {
		title := fmt.Sprintf("round %d", round)
		a.do(t, "PUT", prPath(id), "writer", jsonBody(map[string]any{"version": round, "title": title})).want(t, 200)
		a.do(t, "POST", prPath(id)+"/comments", "writer", jsonBody(map[string]any{"text": title})).want(t, 201)
		seen := func() bool {
			var got pr
			b.do(t, "GET", prPath(id), "reader", nil).want(t, 200).decode(t, &got)
			var cs page[struct{ Text string }]
			b.do(t, "GET", prPath(id)+"/comments", "reader", nil).want(t, 200).decode(t, &cs)
			return got.Title == title && got.Version == round+1 && cs.Size == int(round)+1 && cs.Values[round].Text == title
		}
		if inv == l2cache.InvalidationSync {
			if !seen() {
				t.Fatalf("round %d: B read stale state right after A's write returned (sync invalidation)", round)
			}
			continue
		}
		testkit.Eventually(t, 5*time.Second, "B to see A's write", seen)
	}
	if b.cache.Stats().Node.InvalidationsReceived == 0 {
		t.Fatal("B received no invalidation: were its reads cached at all?")
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
