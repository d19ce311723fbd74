package l2cache

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// RegionStats counts one region's activity on this node.
type RegionStats struct {
	// Hits counts the gets answered from the cache, except those
	// answered from this node's near copies (NEAR), which NearHits
	// counts: a snapshot adds them up from one read of each, so that its
	// near hits never exceed its hits, not even between two snapshots
	// (two counters bumped one after the other and read a moment apart
	// could).
	Hits, NearHits                   atomic.Uint64
	Misses, Loads, MergedLoads       atomic.Uint64
	Puts, RefusedPuts, Invalidations atomic.Uint64
	// MissedClears counts clears of the region after missed messages.
	MissedClears atomic.Uint64
}

// RegionStatsSnapshot is a copy of RegionStats.
type RegionStatsSnapshot struct {
	// Hits counts every get answered from the cache; NearHits those of
	// them answered from this node's near copies (NEAR).
	Hits          uint64 `json:"hits"`
	NearHits      uint64 `json:"near_hits,omitempty"`
	Misses        uint64 `json:"misses"`
	Loads         uint64 `json:"loads"`
	MergedLoads   uint64 `json:"merged_loads"`
	Puts          uint64 `json:"puts"`
	RefusedPuts   uint64 `json:"refused_puts"`
	Invalidations uint64 `json:"invalidations"`
	MissedClears  uint64 `json:"missed_clears"`
}

func (s *RegionStats) snapshot() RegionStatsSnapshot {
	near := s.NearHits.Load()
	return RegionStatsSnapshot{
		Hits: s.Hits.Load() + near, NearHits: near, Misses: s.Misses.Load(), Loads: s.Loads.Load(), MergedLoads: s.MergedLoads.Load(),
		Puts: s.Puts.Load(), RefusedPuts: s.RefusedPuts.Load(), Invalidations: s.Invalidations.Load(),
		MissedClears: s.MissedClears.Load(),
	}
}

// NodeStats counts the cache's cluster traffic on this node.
type NodeStats struct {
	InvalidationsSent, InvalidationsReceived, MissedClears atomic.Uint64
	RemoteCalls, RemoteBytes                               atomic.Uint64
	// Evictions counts DISTRIBUTED entries dropped for the budget
	// (ristretto's own evictions in LOCAL mode are not counted).
	Evictions atomic.Uint64
	// Exclusions counts members this node excluded from serving because
	// they did not acknowledge a synchronous invalidation; Resets counts
	// the times this node dropped everything on regaining its read lease.
	Exclusions, Resets atomic.Uint64
	// NearMisses, NearDrops and OwnerMisses count by cause (the
	// constants above): gets not answered near, wholesale drops of near
	// copies, and gets an owner answered with a miss (or that read
	// through).
	NearMisses  [nNearMiss]atomic.Uint64
	NearDrops   [nNearDrop]atomic.Uint64
	OwnerMisses [nOwnerMiss]atomic.Uint64
	// RemoteByKind splits RemoteCalls by what they carry, and counts
	// besides the query-space updates sent straight to each member
	// (remoteSpaces: invalidations, in every mode, as on the bus; not in
	// RemoteCalls).
	RemoteByKind [nRemote]atomic.Uint64
	// NearInRepl counts the near notices an owner sent inside a backup's
	// replication of the change (the backup held a near copy): each is a
	// near notice that cost no message of its own.
	NearInRepl atomic.Uint64
	// UnlockValues counts the unlocks after which an owner kept the row
	// the writer committed (Region.UnlockWith).
	UnlockValues atomic.Uint64
	// RouteFallbacks counts the keyed query-space updates that could not
	// be routed through their space's owner and were sent to every
	// member instead (keyed.go).
	RouteFallbacks atomic.Uint64
	// Retried counts the query-space updates that failed to reach every
	// member with their write and did when sent again; RetryDrops those
	// dropped unsent past the bound of updates kept (retry.go).
	Retried, RetryDrops atomic.Uint64
	// StampFolds counts the times a bound of per-key stamps was reached
	// and they were folded into one floor: an owned partition's change
	// stamps, or this node's query-space stamps (Config.MaxInvalidations).
	StampFolds atomic.Uint64
	// InvalidationLag counts the invalidations received on the bus by
	// how long after their sender published them they were applied
	// (LagBucket), by the two nodes' wall clocks.
	InvalidationLag Durations
	// WriteLatency counts the writes' cache work on this node by how long
	// it took (LagBucket), by what the write did (the writeOp constants):
	// a soft lock (Region.Lock), a change of a key — an unlock or an
	// invalidation, with the query-space update it carries (Region.Unlock,
	// UnlockWith, Evict) — and a query-space update alone
	// (Cache.UpdateSpaces). It is the time the writer waits: a broadcast
	// in LOCAL mode (acknowledged with --invalidation sync), a round trip
	// through the key's owner in DISTRIBUTED and NEAR mode.
	WriteLatency [nWriteOp]Durations
	// OwnerWait counts the changes this node applied as a partition's
	// owner (a lock, an unlock, an invalidation; a keyed space's update)
	// by how long it then waited for its backups to apply the change
	// (ownerWaitBackups) and for the key's near holders to drop their
	// copies (ownerWaitHolders), each counted when there was one to wait
	// for: from when the change took its turn to send (after the
	// partition's previous change handed its messages over) to the last
	// answer. The two waits overlap: the messages leave together.
	OwnerWait [nOwnerWait]Durations
}

// Durations is a histogram of durations: bucket LagBucket(d) counts d,
// and usec sums them.
type Durations struct {
	buckets [LagBuckets]atomic.Uint64
	usec    atomic.Uint64
}

// Add counts d.
func (h *Durations) Add(d time.Duration) {
	h.buckets[LagBucket(d)].Add(1)
	h.usec.Add(uint64(max(d.Microseconds(), 0)))
}

// DurationsSnapshot is a copy of a Durations: its buckets (LagBucket)
// and the sum of what they count, in µs.
type DurationsSnapshot struct {
	Buckets []uint64 `json:"buckets"`
	Usec    uint64   `json:"usec"`
}

// Since counts the time since start.
func (h *Durations) Since(start time.Time) { h.Add(time.Since(start)) }

// writeOpOf is the WriteLatency histogram of a change of a key.
func writeOpOf(o op) int {
	if o == opLock {
		return writeLock
	}
	return writeChange
}

// What a write did, for NodeStats.WriteLatency.
const (
	writeLock   = iota // a soft lock
	writeChange        // an unlock or invalidation of a key (and its spaces)
	writeSpaces        // a query-space update alone
	nWriteOp
)

var writeOpNames = [nWriteOp]string{"lock", "change", "spaces"}

// What an owner waited for, for NodeStats.OwnerWait.
const (
	ownerWaitBackups = iota
	ownerWaitHolders
	nOwnerWait
)

var ownerWaitNames = [nOwnerWait]string{"backups", "holders"}

// WriteOps and OwnerWaits name the histograms of WriteLatency and
// OwnerWait, as NodeStatsSnapshot keys them.
func WriteOps() []string   { return writeOpNames[:] }
func OwnerWaits() []string { return ownerWaitNames[:] }

// LagBuckets is the number of buckets of the invalidation lag histogram:
// bucket 0 counts lags under 1 µs, bucket i (1 ≤ i < LagBuckets-1) lags
// from 2^(i-1) to 2^i µs, the last one every longer lag (from about 67 s).
const LagBuckets = 28

// LagBucket is the bucket of a lag (a negative one, a clock behind the
// sender's, counts as zero).
func LagBucket(d time.Duration) int {
	us := d.Microseconds()
	if us <= 0 {
		return 0
	}
	return min(bits.Len64(uint64(us)), LagBuckets-1)
}

// LagBucketBound is the upper bound of bucket i (for the last bucket, its
// lower bound).
func LagBucketBound(i int) time.Duration {
	if i >= LagBuckets-1 {
		i = LagBuckets - 2
	}
	return time.Duration(1<<i) * time.Microsecond
}

// NodeStatsSnapshot is a copy of NodeStats.
type NodeStatsSnapshot struct {
	InvalidationsSent     uint64 `json:"invalidations_sent"`
	InvalidationsReceived uint64 `json:"invalidations_received"`
	MissedClears          uint64 `json:"missed_clears"`
	RemoteCalls           uint64 `json:"remote_calls"`
	RemoteBytes           uint64 `json:"remote_bytes"`
	Evictions             uint64 `json:"evictions"`
	Exclusions            uint64 `json:"exclusions"`
	Resets                uint64 `json:"resets"`
	// NearHits is the regions' near hits summed (Cache.Stats fills it
	// from the same region snapshots it reports).
	NearHits uint64 `json:"near_hits"`
	// By cause: see the cause names in stats.go.
	NearMisses  map[string]uint64 `json:"near_misses"`
	NearDrops   map[string]uint64 `json:"near_drops"`
	OwnerMisses map[string]uint64 `json:"owner_misses"`
	// RemoteByKind: remote calls by kind (get, put, change, repl, near, routed), and query-space updates sent straight (spaces, not in RemoteCalls).
	RemoteByKind map[string]uint64 `json:"remote_calls_by_kind"`
	NearInRepl   uint64            `json:"near_in_repl"`
	UnlockValues uint64            `json:"unlock_values,omitempty"`
	// RouteFallbacks is NodeStats.RouteFallbacks.
	RouteFallbacks uint64 `json:"route_fallbacks,omitempty"`
	// Retried and RetryDrops are NodeStats'.
	Retried    uint64 `json:"spaces_retried,omitempty"`
	RetryDrops uint64 `json:"spaces_retry_drops,omitempty"`
	// StampFolds is NodeStats'.
	StampFolds uint64 `json:"stamp_folds,omitempty"`
	// InvalidationLag is NodeStats.InvalidationLag's buckets.
	InvalidationLag []uint64 `json:"invalidation_lag_buckets,omitempty"`
	// WriteLatency and OwnerWait are NodeStats' histograms, by name
	// (those not empty).
	WriteLatency map[string]DurationsSnapshot `json:"write_latency,omitempty"`
	OwnerWait    map[string]DurationsSnapshot `json:"owner_wait,omitempty"`
}

func (s *NodeStats) snapshot() NodeStatsSnapshot {
	return NodeStatsSnapshot{
		InvalidationsSent: s.InvalidationsSent.Load(), InvalidationsReceived: s.InvalidationsReceived.Load(),
		MissedClears: s.MissedClears.Load(), RemoteCalls: s.RemoteCalls.Load(), RemoteBytes: s.RemoteBytes.Load(),
		Evictions: s.Evictions.Load(), Exclusions: s.Exclusions.Load(), Resets: s.Resets.Load(),
		NearMisses: causeSnapshot(nearMissNames[:], s.NearMisses[:]), NearDrops: causeSnapshot(nearDropNames[:], s.NearDrops[:]),
		OwnerMisses:     causeSnapshot(ownerMissNames[:], s.OwnerMisses[:]),
		RemoteByKind:    causeSnapshot(remoteNames[:], s.RemoteByKind[:]),
		NearInRepl:      s.NearInRepl.Load(),
		UnlockValues:    s.UnlockValues.Load(),
		RouteFallbacks:  s.RouteFallbacks.Load(),
		Retried:         s.Retried.Load(),
		RetryDrops:      s.RetryDrops.Load(),
		StampFolds:      s.StampFolds.Load(),
		InvalidationLag: lagSnapshot(&s.InvalidationLag),
		WriteLatency:    histSnapshots(writeOpNames[:], s.WriteLatency[:]),
		OwnerWait:       histSnapshots(ownerWaitNames[:], s.OwnerWait[:]),
	}
}

// histSnapshots copies histograms by name, leaving out the empty ones
// (nil if every one is).
func histSnapshots(names []string, hs []Durations) map[string]DurationsSnapshot {
	var out map[string]DurationsSnapshot
	for i := range hs {
		if b := lagSnapshot(&hs[i]); b != nil {
			if out == nil {
				out = map[string]DurationsSnapshot{}
			}
			out[names[i]] = DurationsSnapshot{Buckets: b, Usec: hs[i].usec.Load()}
		}
	}
	return out
}

// lagSnapshot copies a histogram (nil while it is empty).
func lagSnapshot(h *Durations) []uint64 {
	var out []uint64
	for i := range h.buckets {
		if n := h.buckets[i].Load(); n > 0 {
			if out == nil {
				out = make([]uint64, LagBuckets)
			}
			out[i] = n
		}
	}
	return out
}

// Stats is what Cache.Stats returns: the benchmark and /metrics read it.
// Its JSON (in GET /v1/stats) names fields in snake_case, as the rest
// of the node's /v1 API does.
type Stats struct {
	Node    NodeStatsSnapshot              `json:"node"`
	Regions map[string]RegionStatsSnapshot `json:"regions"`
}

// Causes: why a NEAR node did not answer a get from its near copy, why it
// dropped near copies wholesale, why an owner answered a get with a miss,
// and why a get read through without asking an owner. Counted per node,
// to find what costs NEAR its near hits and hit ratio.
const (
	// Near misses: a get this node's near copies did not answer.
	nearMissLease     = iota // no valid lease (or mode not adopted): read through DISTRIBUTED's path
	nearMissCold             // no copy, and no change of the key recorded here
	nearMissKey              // the owner's change message of the key dropped the copy
	nearMissPartition        // the partition's copies were dropped (a sequence gap, a new owner)
	nearMissNode             // every copy was dropped (a lease reset, a member restart, a mode retire)
	nearMissRegion           // the region's copies were dropped (a clear, missed messages, too many keys)
	nearMissSpaces           // a query result whose spaces were updated since it was kept
	nNearMiss
)

var nearMissNames = [nNearMiss]string{"lease", "cold", "key", "partition", "node", "region", "spaces"}

const (
	// Near drops: events that drop more than one key's near copies.
	nearDropGap      = iota // a gap in a partition's change numbers: the partition
	nearDropOwner           // the table gave a partition another owner, or a new run: the partition
	nearDropGens            // a member's lease generation changed: every copy
	nearDropReset           // this node's lease was reset: every copy
	nearDropRetire          // the NEAR backend was emptied by a mode switch: every copy
	nearDropRegion          // a region clear or missed region messages: the region
	nearDropOverflow        // the region's per-key stamps overflowed: the region
	nearDropFold            // an owner folded a partition's per-key holder sets (nearHolders)
	nearDropSweep           // an owner swept a soft lock held past half its timeout: the key's holders (sweepLock)
	nearKeepOwner           // a copy not kept: the owner that answered no longer owns the partition here
	nearKeepChanged         // a copy not kept: the key, partition or region changed since the read began
	nearKeepLocked          // a load not kept (nor put): the owner answered that the key is soft-locked
	nearKeepLacks           // a query result the owner answered, not kept: the owner did not vouch that it had applied every update of its spaces this node had
	nNearDrop
)

var nearDropNames = [nNearDrop]string{"gap", "owner", "gens", "reset", "retire", "region", "overflow", "fold", "sweep", "keep_owner", "keep_changed", "keep_locked", "keep_lacks"}

const (
	// Owner misses: a get an owner answered with a miss (a ticket).
	ownerMissAbsent    = iota // no entry, and no invalidation of the key recorded
	ownerMissKey              // the key was invalidated (or locked and unlocked) and not put again yet
	ownerMissLocked           // the key is soft-locked
	ownerMissSpaces           // a query result whose spaces were updated since it was put
	ownerMissRegion           // the region was cleared
	ownerMissPartition        // the partition's copy was reset (a new owner, a lease reset)
	// Read-throughs: a get that loaded without a ticket, not cached.
	readThroughUnavailable // the owner could not answer yet (its lease, a new owner's wait)
	readThroughError       // the owner could not be reached in time
	nOwnerMiss
)

var ownerMissNames = [nOwnerMiss]string{"absent", "key", "locked", "spaces", "region", "partition", "read_through_unavailable", "read_through_error"}

func causeSnapshot(names []string, v []atomic.Uint64) map[string]uint64 {
	out := make(map[string]uint64, len(names))
	for i, n := range names {
		out[n] = v[i].Load()
	}
	return out
}

const (
	// Remote calls by kind: to an owner (a get, a put, a change: an
	// invalidation or a soft lock), to a backup (a replication), to a
	// near holder (a change message), to every member (a synchronous
	// query-space update sent straight, not on the bus: syncSpaces).
	remoteGet = iota
	remotePut
	remoteChange
	remoteRepl
	remoteNear
	remoteSpaces
	// remoteRouted: an update of a keyed query space, sent to the owner
	// of the space's partition (keyed.go).
	remoteRouted
	nRemote
)

var remoteNames = [nRemote]string{"get", "put", "change", "repl", "near", "spaces", "routed"}

// remoteKind is the remote call kind of an owner operation.
func remoteKind(k ownerKind) int {
	switch k {
	case kindGet:
		return remoteGet
	case kindPut:
		return remotePut
	case kindSpaces:
		return remoteRouted
	}
	return remoteChange
}
