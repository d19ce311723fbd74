package l2cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// An unlock that carries the committed row, by the only writer that
// locked the key: the owner keeps the row and every near holder keeps it
// in place of its copy, so the reads after the write neither load nor ask
// the owner (NEAR) or hit at the owner (DISTRIBUTED). With a second
// writer's lock overlapping, nothing is kept: the reads load.
func TestUnlockWithKeepsTheRow(t *testing.T) {
	for _, mode := range []string{cluster.CacheModeNear, cluster.CacheModeDistributed} {
		t.Run(mode, func(t *testing.T) {
			_, _, caches := distCaches(t, 41, 3, mode)
			ctx := context.Background()
			rs := regionsOn(t, caches, "pr", ReadWrite)
			key := "7"
			var row counter
			for i, r := range rs {
				row.prime(t, fmt.Sprintf("key on node %d", i+1), func() error { _, err := r.Get(ctx, key, row.load); return err })
			}
			gets := func() (n uint64) {
				for _, c := range caches {
					n += c.Stats().Node.RemoteByKind["get"]
				}
				return n
			}
			kept := func() (n uint64) {
				for _, c := range caches {
					n += c.Stats().Node.UnlockValues
				}
				return n
			}
			// One writer: the row is kept.
			if err := rs[1].Lock(ctx, key); err != nil {
				t.Fatal(err)
			}
			row.v.Add(1)
			v, _ := row.load(ctx)
			loads, g := row.loads.Load(), gets()
			if err := rs[1].UnlockWith(ctx, key, v); err != nil {
				t.Fatal(err)
			}
			if n := kept(); n != 1 {
				t.Fatalf("owners kept %d rows after one writer's unlock, want 1", n)
			}
			for i, r := range rs {
				caches[i].waitLocal()
				got, err := r.Get(ctx, key, row.load)
				if err != nil || !row.is(got) {
					t.Fatalf("node %d read %s (%v) after version %d was acknowledged", i+1, got, err, row.v.Load())
				}
			}
			if n := row.loads.Load() - loads; n != 0 {
				t.Fatalf("%d loads after an unlock that left the row", n)
			}
			if n := gets() - g; mode == cluster.CacheModeNear && n != 0 {
				t.Fatalf("%d gets sent to owners after an unlock that left the row with every near holder", n)
			}
			// Two writers' locks overlap: the first unlock leaves the key
			// locked, the second may follow a commit it does not know
			// of. Nothing is kept; the reads load the database's row.
			if err := rs[0].Lock(ctx, key); err != nil {
				t.Fatal(err)
			}
			if err := rs[2].Lock(ctx, key); err != nil {
				t.Fatal(err)
			}
			row.v.Add(1)
			stale := []byte("stale")
			if err := rs[0].UnlockWith(ctx, key, stale); err != nil {
				t.Fatal(err)
			}
			row.v.Add(1)
			if err := rs[2].UnlockWith(ctx, key, stale); err != nil {
				t.Fatal(err)
			}
			if n := kept(); n != 1 {
				t.Fatalf("owners kept %d rows, want still 1: the second writer's lock overlapped the first's", n)
			}
			for i, r := range rs {
				testkit.Eventually(t, 10*time.Second, fmt.Sprintf("node %d reads the database's row", i+1), func() bool {
					got, err := r.Get(ctx, key, row.load)
					if err != nil {
						t.Fatal(err)
					}
					if string(got) == "stale" {
						t.Fatalf("node %d read a row an overlapped unlock carried", i+1)
					}
					return row.is(got)
				})
			}
		})
	}
}
