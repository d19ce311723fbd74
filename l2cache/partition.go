package l2cache

import (
	"slices"
)

// DefaultPartitions is the number of partitions of DISTRIBUTED mode, as in
// Hazelcast.
const DefaultPartitions = 271

// PartitionTable assigns each partition an owner and backups. The raft
// leader computes it when membership changes and commits it with a new
// epoch; every node routes by the latest table it has.
type PartitionTable struct {
	Epoch uint64 `msgpack:"e"`
	// Replicas[p] lists partition p's owner first, then its backups.
	Replicas [][]string `msgpack:"r"`
}

// PartitionOf maps a region's key to its partition: FNV-1a (64-bit) of
// the region, a zero byte and the key, modulo partitions — or, for a key
// with a hash tag (KeyTag), of an empty region, the zero byte and the tag
// alone, so that every key tagged alike, in every region, shares the
// partition of the keyed query space of that name (keyed.go). Written
// out rather than through hash/fnv, so that a read's key neither escapes
// nor is copied (NEAR computes it on every read).
func PartitionOf(region, key string, partitions int) int {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	if tag, ok := KeyTag(key); ok {
		region, key = "", tag
	}
	h := uint64(offset64)
	for i := 0; i < len(region); i++ {
		h = (h ^ uint64(region[i])) * prime64
	}
	h *= prime64 // the zero byte: h ^ 0 == h
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime64
	}
	return int(h % uint64(partitions))
}

// Owner is partition p's owner, "" if the table is empty.
func (t *PartitionTable) Owner(p int) string {
	if p < len(t.Replicas) && len(t.Replicas[p]) > 0 {
		return t.Replicas[p][0]
	}
	return ""
}

// Has reports whether member holds any partition, as owner or backup.
func (t *PartitionTable) Has(member string) bool {
	for _, rs := range t.Replicas {
		for _, m := range rs {
			if m == member {
				return true
			}
		}
	}
	return false
}

// ComputeTable assigns partitions to members (names of alive members) with
// the given number of backups, starting from prev (nil for none) so that
// as little moves as possible:
//   - an owner that is still a member keeps its partitions while it has no
//     more than its fair share;
//   - a partition whose owner left goes to its first surviving backup, so
//     the new owner starts from the backup's copy rather than empty;
//   - what is left goes to the least-loaded members, ties by name;
//   - backups are chosen the same way among the other members.
//
// It is a pure function: every node computes the same table from the same
// inputs. The epoch is prev's plus one.
func ComputeTable(prev *PartitionTable, members []string, partitions, backups int) PartitionTable {
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	t := PartitionTable{Replicas: make([][]string, partitions)}
	if prev != nil {
		t.Epoch = prev.Epoch
	}
	t.Epoch++
	if len(ms) == 0 {
		return t
	}
	alive := map[string]bool{}
	for _, m := range ms {
		alive[m] = true
	}
	fair := (partitions + len(ms) - 1) / len(ms)
	load := map[string]int{}
	// Owners: keep, or promote a surviving backup.
	for p := range t.Replicas {
		for _, cand := range prevReplicas(prev, p) {
			if alive[cand] && load[cand] < fair {
				t.Replicas[p] = []string{cand}
				load[cand]++
				break
			}
		}
	}
	for p := range t.Replicas {
		if len(t.Replicas[p]) == 0 {
			m := leastLoaded(ms, load, nil)
			t.Replicas[p] = []string{m}
			load[m]++
		}
	}
	// Backups: prefer the previous replicas, then the least loaded.
	backups = min(backups, len(ms)-1)
	bload := map[string]int{}
	bfair := (partitions*backups + len(ms) - 1) / len(ms)
	for p := range t.Replicas {
		for _, cand := range prevReplicas(prev, p) {
			if len(t.Replicas[p]) > backups {
				break
			}
			if alive[cand] && !slices.Contains(t.Replicas[p], cand) && bload[cand] < bfair {
				t.Replicas[p] = append(t.Replicas[p], cand)
				bload[cand]++
			}
		}
	}
	for p := range t.Replicas {
		for len(t.Replicas[p]) <= backups {
			m := leastLoaded(ms, bload, t.Replicas[p])
			t.Replicas[p] = append(t.Replicas[p], m)
			bload[m]++
		}
	}
	return t
}

func prevReplicas(prev *PartitionTable, p int) []string {
	if prev == nil || p >= len(prev.Replicas) {
		return nil
	}
	return prev.Replicas[p]
}

// leastLoaded is the member with the lowest load not in exclude, ties by
// name (ms is sorted).
func leastLoaded(ms []string, load map[string]int, exclude []string) string {
	best := ""
	for _, m := range ms {
		if slices.Contains(exclude, m) {
			continue
		}
		if best == "" || load[m] < load[best] {
			best = m
		}
	}
	return best
}
