package l2cache

import "sync/atomic"

// RegionStats counts one region's activity on this node.
type RegionStats struct {
	Hits, Misses, Loads, MergedLoads atomic.Uint64
	Puts, RefusedPuts, Invalidations atomic.Uint64
	// MissedClears counts clears of the region after missed messages.
	MissedClears atomic.Uint64
}

// RegionStatsSnapshot is a copy of RegionStats.
type RegionStatsSnapshot struct {
	Hits, Misses, Loads, MergedLoads uint64
	Puts, RefusedPuts, Invalidations uint64
	MissedClears                     uint64
}

func (s *RegionStats) snapshot() RegionStatsSnapshot {
	return RegionStatsSnapshot{
		Hits: s.Hits.Load(), Misses: s.Misses.Load(), Loads: s.Loads.Load(), MergedLoads: s.MergedLoads.Load(),
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
	// NearHits counts reads answered from this node's near copies (NEAR).
	NearHits atomic.Uint64
}

// NodeStatsSnapshot is a copy of NodeStats.
type NodeStatsSnapshot struct {
	InvalidationsSent, InvalidationsReceived, MissedClears uint64
	RemoteCalls, RemoteBytes                               uint64
	Evictions                                              uint64
	Exclusions, Resets                                     uint64
	NearHits                                               uint64
}

func (s *NodeStats) snapshot() NodeStatsSnapshot {
	return NodeStatsSnapshot{
		InvalidationsSent: s.InvalidationsSent.Load(), InvalidationsReceived: s.InvalidationsReceived.Load(),
		MissedClears: s.MissedClears.Load(), RemoteCalls: s.RemoteCalls.Load(), RemoteBytes: s.RemoteBytes.Load(),
		Evictions: s.Evictions.Load(), Exclusions: s.Exclusions.Load(), Resets: s.Resets.Load(), NearHits: s.NearHits.Load(),
	}
}

// Stats is what Cache.Stats returns: the benchmark and /metrics read it.
type Stats struct {
	Node    NodeStatsSnapshot
	Regions map[string]RegionStatsSnapshot
}
