package chaos

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/netns"
	"github.com/shoal-dev/shoal/internal/pgserver"
)

// The namespace test: five 'shoal node' processes, each in its own network
// namespace with its own address on a bridge, as five machines on a LAN
// would be — the LAN preset, mutual TLS between the nodes and an
// encrypted gossip with one key (what 'shoal up' gives its nodes), one
// repositories folder, and one PostgreSQL server in a namespace of its
// own. Every node is a raft voter. Writes and reads go through every
// node; the raft leader and one other node are cut off from the other
// three, both ways, and the link comes back. The checker's consistency checks must all pass: no
// acknowledged write lost, no stale read (DISTRIBUTED promises none,
// during the partition as after it), a linearizable kv history, one
// leader per term and one leader all agree on after the heal, caches
// equal to the database, the scheduler's runs exactly once, and every
// node serving each acknowledged push.
//
// Root only (CI runs as root): it skips, saying why, without root, ip,
// nft or PostgreSQL. Everything it creates is named after this process
// (netns's "shoalnet-PID-…") and removed at the end, failure or not; a
// crashed earlier run's leftovers are swept when it starts. With
// CHAOS_KEEP_DIR set, the cluster's directory (the nodes' logs among it)
// is made there and kept.
func TestNamespaceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of node processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("the namespace test needs root (network namespaces, a bridge, nftables); 'make test' runs it as root, as CI does")
	}
	if err := netns.Available(); err != nil {
		t.Skipf("the namespace test cannot run here: %v", err)
	}
	if _, err := pgserver.Bin("postgres"); err != nil {
		t.Skipf("the namespace test needs PostgreSQL (.ci/run installs it): %v", err)
	}
	ctx := context.Background()
	if err := netns.CleanupLeftovers(ctx); err != nil {
		t.Fatalf("sweeping an earlier run's leftovers: %v", err)
	}
	t.Cleanup(func() {
		left, err := netns.Owned(context.Background())
		if err != nil {
			t.Error(err)
		}
		if len(left) > 0 {
			t.Errorf("left behind: %s", strings.Join(left, ", "))
		}
	})
	prof := Profile{
		Name:     "netns",
		Settings: []string{"distributed"},
		Warmup:   3 * time.Second,
		Faults:   []Fault{{Kind: FaultPartitionMinority, Hold: 8 * time.Second}},
		Tail:     3 * time.Second,
		Git:      true,
		Load:     LoadParameters{PRWriters: 2, CommentWriters: 1, ReadersPerNode: 1, KVClientsPerNode: 1, KVKeys: 10, Pace: 10 * time.Millisecond, Abandon: 0.05},
	}
	began := time.Now()
	var log bytes.Buffer
	dir := t.TempDir()
	if d := os.Getenv("CHAOS_KEEP_DIR"); d != "" {
		dir = d
	}
	rep, err := Run(ctx, Config{Binary: shoalBin, Dir: dir, Nodes: 5, Profile: prof, Partitions: "on",
		Preset: "lan", Postgres: true, Seed: 20, Log: &log,
		// Every node a voter: two cut off are a minority of the raft
		// group too (with the default three voters they could hold two).
		ExtraArgs: []string{"--voters", "5"}})
	var out bytes.Buffer
	if rep != nil {
		WriteText(&out, rep)
	}
	t.Logf("in %v; progress:\n%s\nreport:\n%s", time.Since(began).Round(time.Second), log.String(), out.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Violations(); n > 0 {
		t.Fatalf("%d violation(s); see the report above", n)
	}
	s := rep.Settings[0]
	if s.Staleness.Reads < 100 || s.KV.Ops < 100 || s.Ops.Total() < 300 {
		t.Errorf("%d reads judged, %d kv operations, %d in all: the load did not run", s.Staleness.Reads, s.KV.Ops, s.Ops.Total())
	}
	if len(s.Faults) == 0 || s.Faults[0].Kind != FaultPartitionMinority || s.Faults[0].Skipped != "" || s.Faults[0].Recovery <= 0 {
		t.Errorf("the partition did not run: %+v", s.Faults)
	}
	if !strings.Contains(s.Database, "PostgreSQL") || !strings.Contains(s.Partitions, "namespace") {
		t.Errorf("database %q, partitions %q: not the setting under test", s.Database, s.Partitions)
	}
	if s.LeaderTerms < 2 {
		t.Errorf("%d terms saw a leader: the majority never elected a new one while the old leader was cut off", s.LeaderTerms)
	}
}
