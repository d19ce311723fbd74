package dmap

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// keysOwnedBy returns n keys of distinct partitions whose owner is owner
// and whose backup is backup in d's table.
func keysOwnedBy(d *DMap, owner, backup, prefix string, n int) []string {
	t := d.Table()
	seen := map[int]bool{}
	var out []string
	for i := 0; len(out) < n && i < 1_000_000; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		p := PartitionOf(k, d.Partitions())
		if r := t.Replicas[p]; !seen[p] && len(r) == 2 && r[0] == owner && r[1] == backup {
			seen[p] = true
			out = append(out, k)
		}
	}
	return out
}

// A pipeline's writes to many partitions reach their backup in far fewer
// messages than batches, and the backup holds every acknowledged one when
// the owner dies.
func TestReplicationsShareMessages(t *testing.T) {
	tc := start(t, 11, 3, 1, nil)
	owner, backup := tc.members[2].Node.Name(), tc.members[1].Node.Name()
	keys := keysOwnedBy(tc.maps[0], owner, backup, "m", 40)
	if len(keys) < 20 {
		t.Fatalf("only %d partitions owned by %s with backup %s", len(keys), owner, backup)
	}
	// The owner's first baselines to its backups are sent by its sweep:
	// wait until they are done.
	var before Stats
	testkit.Eventually(t, 30*time.Second, "the baselines sent", func() bool {
		s1 := tc.maps[2].Stats()
		time.Sleep(300 * time.Millisecond)
		before = tc.maps[2].Stats()
		return s1.Replications == before.Replications
	})
	ops := make([]Op, len(keys))
	for i, k := range keys {
		ops[i] = set(k, "v"+k)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs, err := tc.maps[0].Do(ctx(t), ops, DoOptions{})
		if err != nil {
			t.Fatal(err)
		}
		acked := true
		for _, r := range rs {
			if r.Err == ErrNotAcked {
				acked = false
			} else if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		if acked || time.Now().After(deadline) {
			break
		}
	}
	st := tc.maps[2].Stats()
	batches, msgs := st.Replications-before.Replications, st.ReplMessages-before.ReplMessages
	t.Logf("%d partitions' batches in %d messages", batches, msgs)
	if batches < uint64(len(keys)) {
		t.Fatalf("%d batches replicated for %d partitions", batches, len(keys))
	}
	// At most linkSenders messages leave before the first answer; every
	// batch queued meanwhile leaves in the next.
	if msgs > batches/4 {
		t.Fatalf("%d batches took %d messages", batches, msgs)
	}
	tc.members[2].Kill()
	testkit.Eventually(t, 30*time.Second, "a table without the dead owner", func() bool {
		return tc.maps[0].Owner(PartitionOf(keys[0], 271)) != owner && tc.maps[1].Owner(PartitionOf(keys[0], 271)) != owner
	})
	for _, k := range keys {
		if r := do(t, tc.maps[0], get(k)); string(r.Value) != "v"+k {
			t.Fatalf("after the owner died, %s = %q (nil %v), want %q", k, r.Value, r.Nil, "v"+k)
		}
	}
}

// A backup that does not know the combined message (an older shoal) is
// sent each batch alone, and its copy serves when the owner dies.
func TestReplicationToABackupWithoutCombinedMessages(t *testing.T) {
	tc := start(t, 12, 3, 1, nil)
	owner, backup := tc.members[2].Node.Name(), tc.members[1].Node.Name()
	tc.members[1].Node.RPC().Handle(rpcRepls, nil) // answers "no handler"
	keys := keysOwnedBy(tc.maps[0], owner, backup, "o", 30)
	ops := make([]Op, len(keys))
	for i, k := range keys {
		ops[i] = set(k, "w"+k)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs, err := tc.maps[0].Do(ctx(t), ops, DoOptions{})
		if err != nil {
			t.Fatal(err)
		}
		acked := true
		for _, r := range rs {
			if r.Err != nil {
				acked = false
			}
		}
		if acked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes not acknowledged: %v", rs)
		}
	}
	if !tc.maps[2].noRepls(backup) {
		t.Fatal("the owner did not learn that the backup lacks the combined message")
	}
	tc.members[2].Kill()
	testkit.Eventually(t, 30*time.Second, "a table without the dead owner", func() bool {
		return tc.maps[0].Owner(PartitionOf(keys[0], 271)) != owner && tc.maps[1].Owner(PartitionOf(keys[0], 271)) != owner
	})
	for _, k := range keys {
		if r := do(t, tc.maps[0], get(k)); string(r.Value) != "w"+k {
			t.Fatalf("after the owner died, %s = %q (nil %v), want %q", k, r.Value, r.Nil, "w"+k)
		}
	}
}

// A backup applies replications on the connection's reader, but one from
// an owner whose table it has not adopted yet waits for it (awaitEpoch) on
// a goroutine of its own: the replications behind it are applied
// meanwhile, and it is answered once the wait is over.
func TestReplicationFromANewerTableWaitsOffTheReader(t *testing.T) {
	tc := start(t, 12, 3, 1, func(c *Config) { c.SyncTimeout = 20 * time.Second })
	owner, backup := tc.members[0].Node.Name(), tc.members[1].Node.Name()
	keys := keysOwnedBy(tc.maps[0], owner, backup, "w", 2)
	if len(keys) < 2 {
		t.Fatalf("no two partitions owned by %s with backup %s", owner, backup)
	}
	// A replication of a table the backup will not see within the wait.
	p := PartitionOf(keys[0], tc.maps[0].Partitions())
	body := appendReplication(nil, &replication{Partition: p, Epoch: tc.maps[0].Table().Epoch + 1000})
	sent := time.Now()
	lag := tc.maps[0].rpc.Go(ctx(t), backup, rpcRepl, body)
	if r := write(t, tc.maps[0], set(keys[1], "v")); r.Err != nil {
		t.Fatal(r.Err)
	}
	setDone := time.Now()
	_, err := lag.Wait(ctx(t))
	lagDone := time.Now()
	if err == nil || !strings.Contains(err.Error(), "is not") {
		t.Fatalf("the replication from a table the backup lacks: %v, want the backup's refusal after its wait", err)
	}
	if waited := lagDone.Sub(sent); waited < 9*time.Second {
		t.Fatalf("answered after %v: the backup did not wait for the table (SyncTimeout/2 = 10 s)", waited)
	}
	// (Not waiting for it, the write takes milliseconds; 5 s is for a
	// loaded machine.)
	if took := setDone.Sub(sent); took > 5*time.Second {
		t.Fatalf("a write replicated to the same backup took %v: it waited for the lagging replication", took)
	}
}
