package l2cache

import (
	"fmt"
	"hash/fnv"
	"testing"
)

func counts(t PartitionTable) (owners, backups map[string]int) {
	owners, backups = map[string]int{}, map[string]int{}
	for _, r := range t.Replicas {
		owners[r[0]]++
		for _, b := range r[1:] {
			backups[b]++
		}
	}
	return owners, backups
}

func TestComputeTableBalancedAndDeterministic(t *testing.T) {
	members := []string{"n3", "n1", "n2"}
	a := ComputeTable(nil, members, DefaultPartitions, 1)
	b := ComputeTable(nil, []string{"n1", "n2", "n3", "n2"}, DefaultPartitions, 1)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("the same members in another order gave another table")
	}
	owners, backups := counts(a)
	for _, m := range []string{"n1", "n2", "n3"} {
		if owners[m] < 90 || owners[m] > 91 || backups[m] < 90 || backups[m] > 91 {
			t.Fatalf("unbalanced: owners %v backups %v", owners, backups)
		}
	}
	for p, r := range a.Replicas {
		if len(r) != 2 || r[0] == r[1] {
			t.Fatalf("partition %d: replicas %v", p, r)
		}
	}
	if a.Epoch != 1 {
		t.Fatalf("epoch %d", a.Epoch)
	}
}

// When an owner dies, its partitions go to their backups: the new owner
// starts from the copy it already has, and the rest barely moves.
func TestComputeTableFailoverPromotesBackups(t *testing.T) {
	before := ComputeTable(nil, []string{"n1", "n2", "n3"}, DefaultPartitions, 1)
	after := ComputeTable(&before, []string{"n1", "n2"}, DefaultPartitions, 1)
	if after.Epoch != 2 {
		t.Fatalf("epoch %d", after.Epoch)
	}
	moved := 0
	for p := range after.Replicas {
		was, now := before.Replicas[p], after.Replicas[p]
		switch {
		case was[0] == "n3":
			if now[0] != was[1] {
				t.Fatalf("partition %d: owner n3 died, backup %s, new owner %s", p, was[1], now[0])
			}
		case now[0] != was[0]:
			moved++
		}
	}
	if moved > DefaultPartitions/10 {
		t.Fatalf("%d partitions of surviving owners moved", moved)
	}
	owners, _ := counts(after)
	if owners["n1"] < 135 || owners["n2"] < 135 {
		t.Fatalf("unbalanced after failover: %v", owners)
	}
	// A node joins: it takes a fair share, taken from the others.
	grown := ComputeTable(&after, []string{"n1", "n2", "n4"}, DefaultPartitions, 1)
	owners, _ = counts(grown)
	if owners["n4"] < 60 {
		t.Fatalf("the new node owns only %d partitions", owners["n4"])
	}
}

func TestComputeTableEdgeCases(t *testing.T) {
	if tb := ComputeTable(nil, nil, 7, 1); tb.Owner(0) != "" {
		t.Fatal("a table without members has an owner")
	}
	one := ComputeTable(nil, []string{"solo"}, 7, 2)
	for _, r := range one.Replicas {
		if len(r) != 1 || r[0] != "solo" {
			t.Fatalf("one member: %v", r)
		}
	}
	if p := PartitionOf("pr", "42", DefaultPartitions); p < 0 || p >= DefaultPartitions || p != PartitionOf("pr", "42", DefaultPartitions) {
		t.Fatal("PartitionOf is not a stable index")
	}
}

// PartitionOf is FNV-1a of region, a zero byte and key, as hash/fnv
// computes it: nodes of other builds map keys to the same partitions.
func TestPartitionOfIsFNV1a(t *testing.T) {
	for _, rk := range [][2]string{{"pr", "42"}, {"", ""}, {"domain.PullRequest", "7"}, {"q", "list\x00page=2"}, {"région", "ключ"}} {
		h := fnv.New64a()
		h.Write([]byte(rk[0]))
		h.Write([]byte{0})
		h.Write([]byte(rk[1]))
		for _, n := range []int{1, 7, DefaultPartitions, 1 << 20} {
			if got, want := PartitionOf(rk[0], rk[1], n), int(h.Sum64()%uint64(n)); got != want {
				t.Fatalf("PartitionOf(%q, %q, %d) = %d, hash/fnv gives %d", rk[0], rk[1], n, got, want)
			}
		}
	}
}
