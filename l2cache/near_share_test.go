package l2cache

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// ownerFresh reports whether the owner of region's key holds an entry
// for it that it serves: no query space of spaces was updated there
// since.
func ownerFresh(caches []*Cache, region, key string, spaces []string) bool {
	c, e := ownerEntry(caches, region, key)
	return e != nil && e.stamp > c.spacesStamp(spaces)
}

// NEAR shares query results through their owners (getQuery, updates.go):
// a node with no result of its own asks the query's owner and keeps what
// the owner holds, without loading. After a write's update of the spaces
// reaches every node, each node's result is gone; one node loads, and the
// others share its result again. The update's writer has not told the
// readers that it resolved (it writes nothing after it), so they name it
// in their reads, and the owner, which applied it, says they may keep its
// answer.
func TestNearSharesQueryResults(t *testing.T) {
	_, members, caches := distCaches(t, 44, 3, cluster.CacheModeNear)
	ctx := context.Background()
	qs := make([]*Region, 3)
	for i, c := range caches {
		var err error
		if qs[i], err = c.Region("shared", QueryRegion, NonstrictReadWrite); err != nil {
			t.Fatal(err)
		}
	}
	key := keyPlaced(distOf(caches[0]), "shared", members[0].Node.Name(), members[2].Node.Name(), "")
	spaces := []string{"comments"}
	var page counter
	get := func(i int) []byte {
		t.Helper()
		v, err := qs[i].GetQuery(ctx, key, spaces, page.load)
		if err != nil {
			t.Fatal(err)
		}
		if !page.is(v) {
			t.Fatalf("node %d served version %s, want %d", i+1, v, page.v.Load())
		}
		return v
	}
	for round := range 3 {
		// Node 2 loads (the owner, node 1, misses), and offers its result
		// to the owner.
		before := page.loads.Load()
		get(1)
		if n := page.loads.Load() - before; n != 1 {
			t.Fatalf("round %d: node 2's first read loaded %d times, want 1", round, n)
		}
		testkit.Eventually(t, 20*time.Second, "the owner holding node 2's result", func() bool {
			return ownerFresh(caches, "shared", key, spaces)
		})
		// Node 3 and the owner read it from the owner, without loading,
		// and keep it: their next reads are near hits.
		for _, i := range []int{2, 0} {
			get(i)
			caches[i].waitLocal() // the copy it kept is in its store
			hits := caches[i].Stats().Node.NearHits
			get(i)
			if caches[i].Stats().Node.NearHits != hits+1 {
				t.Fatalf("round %d: node %d's second read was not answered from its own copy", round, i+1)
			}
		}
		if n := page.loads.Load() - before; n != 1 {
			t.Fatalf("round %d: %d loads, want 1: the owner's result was not shared", round, n)
		}
		if round == 2 {
			break
		}
		// A write of the table: its update reaches every node before
		// UpdateSpaces returns. The writer is node 3, then node 2.
		page.v.Add(1)
		if err := caches[2-round].UpdateSpaces(ctx, spaces...); err != nil {
			t.Fatal(err)
		}
		if need, ok := caches[0].updatesNeeded("shared", spaces); !ok || len(need) == 0 {
			t.Fatalf("round %d: the owner names %v (%v): the writer's update, unresolved as far as it knows, should be", round, need, ok)
		}
	}
	if n := caches[0].stats.NearDrops[nearKeepLacks].Load() + caches[1].stats.NearDrops[nearKeepLacks].Load() + caches[2].stats.NearDrops[nearKeepLacks].Load(); n != 0 {
		t.Fatalf("%d answers not kept for an update the owner lacked; every update reached every node first", n)
	}
}
