package l2cache

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// A partition's replication leaves the owner in sequence order: concurrent
// writes (and puts, whose replications leave in batches) to the keys of
// one partition, from every node at once, reach the backup in the order
// the owner numbered them, so the backup is not
// tainted (which would make a takeover start empty for nothing) and has
// applied every change.
func TestDistributedReplicationInOrder(t *testing.T) {
	forOwnedModes(t, testDistributedReplicationInOrder)
}

func testDistributedReplicationInOrder(t *testing.T, mode string) {
	// Replication bounded generously: a message that leaves too late to
	// be sent (its deadline passed while it waited its turn) is a gap the
	// backup is right to count, and this test is about order alone.
	caches := startLeased(t, 11, 3, mode, InvalidationAsync, func(c *Config) { c.SyncTimeout = time.Minute }).caches
	for i, c := range caches {
		testkit.Eventually(t, 20*time.Second, fmt.Sprintf("node %d's cache ready", i+1), func() bool { return c.Ready() == nil })
	}
	d0 := distOf(caches[0])
	table := d0.keeper.Table()
	const p = 3
	if len(table.Replicas[p]) < 2 {
		t.Fatalf("partition %d has no backup: %v", p, table.Replicas[p])
	}
	var keys []string
	for i := 0; len(keys) < 8; i++ {
		if k := strconv.Itoa(i); PartitionOf("pr", k, len(table.Replicas)) == p {
			keys = append(keys, k)
		}
	}
	dOf := func(name string) *dist {
		for _, c := range caches {
			if d := distOf(c); d.self == name {
				return d
			}
		}
		t.Fatalf("no node %s", name)
		return nil
	}
	owner, backup := dOf(table.Replicas[p][0]), dOf(table.Replicas[p][1])
	regions := make([]*Region, len(caches))
	for i, c := range caches {
		regions[i] = region(t, c, "pr", NonstrictReadWrite)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const writers, writes = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers*len(regions))
	for _, r := range regions {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range writes {
					k := keys[(w+i)%len(keys)]
					var err error
					if i%4 == 3 {
						_, err = r.Get(ctx, k, func(context.Context) ([]byte, error) { return []byte("v" + k), nil })
					} else {
						err = r.Evict(ctx, k)
					}
					if err != nil {
						errs <- fmt.Errorf("write %d of writer %d: %w", i, w, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if e := d0.keeper.Table().Epoch; e != table.Epoch {
		t.Skipf("the partition table changed during the test (epoch %d to %d)", table.Epoch, e)
	}
	op, _ := owner.part(p)
	bp, _ := backup.part(p)
	// Puts' replications leave in batches, a little after the puts. In
	// NEAR mode a reader offers what it loaded to the owner one way after
	// its Get returned (putNote), so the owner may still number a put or
	// two after the writers are done: the backup must catch up with the
	// owner's count as it stands (5 of 40 runs of /near failed when it
	// was read once, the backup then one ahead of it).
	var sent, applied uint64
	var tainted bool
	deadline := time.Now().Add(testkit.MinWait)
	for {
		op.mu.Lock()
		sent = op.seq
		op.mu.Unlock()
		bp.mu.Lock()
		applied, tainted = bp.seq, bp.tainted
		bp.mu.Unlock()
		if applied == sent || tainted {
			break
		}
		if time.Now().After(deadline) {
			// Where the rest is: still queued at the owner (a batch not
			// flushed), or sent (lost, or not yet served at the backup).
			owner.bmu.Lock()
			b := owner.batches[backup.self]
			owner.bmu.Unlock()
			queued, timer := 0, false
			if b != nil {
				b.mu.Lock()
				queued, timer = len(b.ops), b.timer != nil
				b.mu.Unlock()
			}
			os, bs := owner.rpc.Stats(), backup.rpc.Stats()
			t.Fatalf("backup %s of partition %d applied up to %d of the owner's %d in %v (not tainted); at the owner: %d put replications queued for it, flush timer set %v, %d one-way messages sent, %d calls (%d failed); at the backup: %d one-way messages received, %d served, %d connections accepted",
				backup.self, p, applied, sent, testkit.MinWait, queued, timer, os.NotifySent.Load(), os.Calls.Load(), os.CallErrors.Load(),
				bs.NotifyReceived.Load(), bs.Served.Load(), bs.ConnsAccepted.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if sent < uint64(writers*len(regions)*writes/2) {
		t.Fatalf("the owner numbered only %d replications", sent)
	}
	if tainted {
		t.Fatalf("backup %s of partition %d is tainted: replications arrived out of order (owner sent %d, backup at %d)", backup.self, p, sent, applied)
	}
	if applied != sent {
		t.Fatalf("backup %s applied up to %d, the owner sent %d", backup.self, applied, sent)
	}
}
