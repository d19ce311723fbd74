package l2cache

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// The leader commits a table for the members; every node adopts it; when a
// member dies, a new epoch moves its partitions to their backups.
func TestTableKeeperFollowsMembership(t *testing.T) {
	net := memnet.New(5)
	t.Cleanup(func() { net.Close() })
	members := clustertest.StartWithStores(t, net, 3)
	var keepers []*TableKeeper
	for _, m := range members {
		k := newKeeper(t, TableConfig{Node: m.Node, Store: m.Store, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(t)})
		keepers = append(keepers, k)
	}
	for _, k := range keepers {
		testkit.Eventually(t, 10*time.Second, "a table on every node", func() bool {
			return k.Table().Epoch >= 1 && len(tableMembers(k.Table())) == 3
		})
	}
	first := *keepers[0].Table()
	// Kill a node that is not the raft leader.
	victim := 2
	if members[victim].Store.Status().Role == "leader" {
		victim = 1
	}
	members[victim].Store.Close()
	members[victim].Node.Kill()
	dead := members[victim].Node.Name()
	for i, k := range keepers {
		if i == victim {
			continue
		}
		testkit.Eventually(t, 15*time.Second, "a table without the dead node", func() bool {
			tb := k.Table()
			return tb.Epoch > first.Epoch && len(tableMembers(tb)) == 2
		})
		tb := k.Table()
		for p, r := range first.Replicas {
			if r[0] == dead && tb.Owner(p) != r[1] {
				t.Fatalf("partition %d: owner %s died; its backup %s should own it, not %s", p, dead, r[1], tb.Owner(p))
			}
		}
	}
}
