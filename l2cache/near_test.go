package l2cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// A NEAR node serves what it read from its near copy, without asking the
// owner; a write through any node drops every near copy before it is
// acknowledged.
func TestNearCopiesServedAndDropped(t *testing.T) {
	_, _, caches := distCaches(t, 31, 3, cluster.CacheModeNear)
	ctx := context.Background()
	regions := make([]*Region, 3)
	for i, c := range caches {
		regions[i] = region(t, c, "pr", ReadWrite)
	}
	var rows [20]counter
	for k := range rows {
		for i, r := range regions {
			testkit.Eventually(t, 10*time.Second, fmt.Sprintf("key %d near node %d", k, i+1), func() bool {
				before := caches[i].Stats().Node.NearHits
				if _, err := r.Get(ctx, fmt.Sprint(k), rows[k].load); err != nil {
					t.Fatal(err)
				}
				caches[i].waitLocal()
				return caches[i].Stats().Node.NearHits > before
			})
		}
	}
	// Every node now answers every key from its near copy: no remote call.
	before := make([]uint64, 3)
	for i, c := range caches {
		before[i] = c.Stats().Node.RemoteCalls
	}
	for k := range rows {
		for _, r := range regions {
			if _, err := r.Get(ctx, fmt.Sprint(k), rows[k].load); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, c := range caches {
		if st := c.Stats().Node; st.RemoteCalls != before[i] || st.NearHits == 0 {
			t.Fatalf("node %d: %d remote calls for reads of near-cached keys, %d near hits", i+1, st.RemoteCalls-before[i], st.NearHits)
		}
	}
	// Writes through each node in turn, with both strategies' changes: a
	// read that starts after the write returned sees it, on every node.
	for round := range 6 {
		k := round % len(rows)
		rows[k].v.Add(1)
		w := regions[round%3]
		var err error
		if round%2 == 0 {
			err = w.Evict(ctx, fmt.Sprint(k))
		} else if err = w.Lock(ctx, fmt.Sprint(k)); err == nil {
			err = w.Unlock(ctx, fmt.Sprint(k))
		}
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range regions {
			v, err := r.Get(ctx, fmt.Sprint(k), rows[k].load)
			if err != nil || !rows[k].is(v) {
				t.Fatalf("round %d: node %d read %s (%v) after version %d was acknowledged", round, i+1, v, err, rows[k].v.Load())
			}
		}
	}
}

// The near stale-put race: a read brings the old value back from the
// owner, a write changes the key and its change message reaches the
// reader before the reader keeps its copy — the copy is never kept.
func TestNearStaleKeepRefused(t *testing.T) {
	_, _, caches := distCaches(t, 32, 3, cluster.CacheModeNear)
	ctx := context.Background()
	a, b := region(t, caches[0], "pr", NonstrictReadWrite), region(t, caches[1], "pr", NonstrictReadWrite)
	var row counter
	row.prime(t, "the key at its owner", func() error {
		_, err := a.Get(ctx, "1", row.load)
		return err
	})
	// B's next read is a hit at the owner (the old value); before B keeps
	// it, A's write goes through and must drop B's copy first.
	wrote := make(chan error, 1)
	testBeforeKeep = func(key string) {
		testBeforeKeep = nil
		row.v.Add(1)
		wrote <- a.Evict(ctx, key)
	}
	t.Cleanup(func() { testBeforeKeep = nil })
	if _, err := b.Get(ctx, "1", row.load); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "B's read after the write", func() bool {
		v, err := b.Get(ctx, "1", row.load)
		if err != nil {
			t.Fatal(err)
		}
		if !row.is(v) {
			t.Fatalf("B served %s after version %d was acknowledged: the stale near copy was kept", v, row.v.Load())
		}
		return true
	})
}
