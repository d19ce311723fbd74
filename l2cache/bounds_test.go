package l2cache

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// An owner keeps one stamp per key changed in a partition, to refuse the
// puts of loads that began before the change. Those stamps are bounded:
// past the bound they fold into one floor of the tickets honoured. A
// stale put whose key's own stamp was folded away is still refused, and
// the partition's entries survive the fold.
func TestOwnerChangeStampsFoldAndStillRefuseStalePuts(t *testing.T) {
	forOwnedModes(t, testOwnerChangeStampsFold)
}

func testOwnerChangeStampsFold(t *testing.T, mode string) {
	_, _, caches := distCaches(t, 11, 3, mode)
	const name = "pr"
	rs := regionsOn(t, caches, name, NonstrictReadWrite)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	d0 := distOf(caches[0])
	bound := d0.holderBound()
	// keys of one partition: x (the stale put's), y (cached through the
	// fold) and bound others, changed to fill the owner's stamps
	p := d0.partition(name, "x")
	var others []string
	for i := 0; len(others) < bound+1; i++ {
		if k := fmt.Sprintf("k%d", i); d0.partition(name, k) == p {
			others = append(others, k)
		}
	}
	y := others[0]
	others = others[1:]
	loadY := func(context.Context) ([]byte, error) { return []byte("y1"), nil }
	if _, err := a.Get(ctx, y, loadY); err != nil {
		t.Fatal(err)
	}
	// NEAR offers the load to the owner without waiting for its answer
	testkit.Eventually(t, 10*time.Second, "the owner keeps "+y, func() bool { return ownerHolds(caches, name, y) })
	var db atomic.Value
	db.Store("v1")
	release := heldLoad(ctx, b, "x", &db)
	db.Store("v2")
	if err := a.Evict(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	owner, _ := ownerEntry(caches, name, y)
	folds := owner.Stats().Node.StampFolds
	for _, k := range others {
		if err := a.Evict(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	od := distOf(owner)
	dp, _ := od.part(p)
	dp.mu.Lock()
	kept, folded := len(dp.inv), dp.folded
	dp.mu.Unlock()
	if owner.Stats().Node.StampFolds == folds || kept > bound || folded == 0 {
		t.Fatalf("after %d changes in one partition: %d stamps kept (bound %d), folds %d → %d, floor of tickets %d",
			len(others)+1, kept, bound, folds, owner.Stats().Node.StampFolds, folded)
	}
	release()
	for i, r := range rs {
		v, err := r.Get(ctx, "x", func(context.Context) ([]byte, error) { return []byte(db.Load().(string)), nil })
		if err != nil || string(v) != "v2" {
			t.Fatalf("node %d read %q (%v): the stale put landed after its key's stamp was folded", i+1, v, err)
		}
	}
	if _, e := ownerEntry(caches, name, y); e == nil {
		t.Fatalf("the fold dropped %s's entry", y)
	}
	loads := 0
	if _, err := rs[2].Get(ctx, y, func(context.Context) ([]byte, error) { loads++; return []byte("y1"), nil }); err != nil || loads != 0 {
		t.Fatalf("a read of %s after the fold loaded %d times (%v), want a hit", y, loads, err)
	}
}

// A node keeps one stamp per query space updated; past the bound they
// fold into the floor, and every query result kept before is dropped.
func TestQuerySpaceStampsFold(t *testing.T) {
	lc := startLeased(t, 5, 1, "local", InvalidationAsync, func(c *Config) { c.MaxInvalidations = 8 })
	c := lc.caches[0]
	c.markSpaces([]string{"t0"}, updateID{})
	before := c.spacesStamp([]string{"t0"})
	for i := 1; i <= 8; i++ {
		c.markSpaces([]string{fmt.Sprintf("t%d", i)}, updateID{})
	}
	c.mu.Lock()
	kept, floor := len(c.spaces), c.spacesFloor
	c.mu.Unlock()
	if kept > 8 || c.Stats().Node.StampFolds != 1 {
		t.Fatalf("%d space stamps kept (bound 8), %d folds (want 1)", kept, c.Stats().Node.StampFolds)
	}
	// every space, t0 too (its stamp was folded away), is at or above
	// the floor: a result kept before the fold is not served
	if s := c.spacesStamp([]string{"t0"}); s < floor || s <= before || floor == 0 {
		t.Fatalf("t0's stamp %d after the fold (before %d, floor %d)", s, before, floor)
	}
	if s := c.spacesStamp([]string{"never"}); s != floor {
		t.Fatalf("a space never updated is stamped %d, want the floor %d", s, floor)
	}
}
