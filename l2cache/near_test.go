package l2cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

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

// An owner whose process restarts before the cluster declares it failed
// keeps its name and its partitions but not its registry of near holders
// (the chaos checker found it). Here the owner's lease record gets a new
// generation, as a new process's activation gives it: the owner drops
// everything it held, holders included. A holder must not serve a copy
// it got from the old incarnation after a write through the new one.
func TestNearOwnerRestartDropsCopies(t *testing.T) {
	lc := startLeased(t, 41, 3, cluster.CacheModeNear, InvalidationAsync)
	for i, c := range lc.caches {
		testkit.Eventually(t, 30*time.Second, fmt.Sprintf("node %d's cache ready", i+1), func() bool { return c.Ready() == nil })
	}
	regions := make([]*Region, 3)
	for i, c := range lc.caches {
		regions[i] = region(t, c, "pr", NonstrictReadWrite)
	}
	ctx := context.Background()
	// A key owned by node 1, held near by node 2.
	d := distOf(lc.caches[0])
	key := ""
	for k := 0; key == ""; k++ {
		if d.keeper.Table().Owner(d.partition("pr", strconv.Itoa(k))) == lc.members[0].Node.Name() {
			key = strconv.Itoa(k)
		}
	}
	var db atomic.Value
	db.Store("v1")
	load := func(context.Context) ([]byte, error) { return []byte(db.Load().(string)), nil }
	testkit.Eventually(t, 30*time.Second, "node 2 to hold a near copy", func() bool {
		v, err := regions[1].Get(ctx, key, func(context.Context) ([]byte, error) { return nil, errors.New("loaded") })
		if err != nil {
			regions[1].Get(ctx, key, load)
			lc.caches[1].waitLocal()
			return false
		}
		return string(v) == "v1"
	})
	// The owner's "new process": a new generation of its lease record.
	store := lc.members[0].Store
	kv, err := store.Get(ctx, MembersPrefix+lc.members[0].Node.Name())
	if err != nil {
		t.Fatal(err)
	}
	var rec memberRecord
	if err := msgpack.Unmarshal(kv.Value, &rec); err != nil {
		t.Fatal(err)
	}
	rec.Gen += 100
	b, _ := msgpack.Marshal(&rec)
	if _, err := store.CompareAndSet(ctx, kv.Key, kv.Version, b); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the owner to activate its record again", func() bool { return lc.leases[0].Stats().Resets >= 2 })
	testkit.Eventually(t, 30*time.Second, "the owner to serve again", func() bool { return lc.caches[0].Ready() == nil })
	// A new process starts with no registry of holders.
	d.mu.Lock()
	for _, dp := range d.parts {
		dp.mu.Lock()
		dp.holders = nil // keys, wide and sequence numbers
		dp.mu.Unlock()
	}
	d.mu.Unlock()
	db.Store("v2")
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	testkit.Eventually(t, 30*time.Second, "the write's invalidation acknowledged", func() bool { return regions[2].Evict(wctx, key) == nil })
	before := lc.caches[1].Stats().Node.NearHits
	v0, err0 := regions[1].Get(ctx, key, func(context.Context) ([]byte, error) { return nil, errors.New("loaded") })
	t.Logf("first read after the write: %q %v, near hits %d → %d", v0, err0, before, lc.caches[1].Stats().Node.NearHits)
	for range 50 {
		if v, err := regions[1].Get(ctx, key, load); err != nil || string(v) != "v2" {
			t.Fatalf("node 2 read %q, %v after v2 was acknowledged through the owner's new incarnation (node 2: %+v; owner: %+v, %+v)", v, err,
				lc.caches[1].Stats().Node, lc.caches[0].Stats().Node, lc.leases[0].Stats())
		}
	}
}
