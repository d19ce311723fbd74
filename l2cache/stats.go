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
	Hits          uint64 `json:"hits"`
	Misses        uint64 `json:"misses"`
	Loads         uint64 `json:"loads"`
	MergedLoads   uint64 `json:"merged_loads"`
	Puts          uint64 `json:"puts"`
	RefusedPuts   uint64 `json:"refused_puts"`
	Invalidations uint64 `json:"invalidations"`
	MissedClears  uint64 `json:"missed_clears"`
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
	InvalidationsSent     uint64 `json:"invalidations_sent"`
	InvalidationsReceived uint64 `json:"invalidations_received"`
	MissedClears          uint64 `json:"missed_clears"`
	RemoteCalls           uint64 `json:"remote_calls"`
	RemoteBytes           uint64 `json:"remote_bytes"`
	Evictions             uint64 `json:"evictions"`
	Exclusions            uint64 `json:"exclusions"`
	Resets                uint64 `json:"resets"`
	NearHits              uint64 `json:"near_hits"`
}

func (s *NodeStats) snapshot() NodeStatsSnapshot {
	return NodeStatsSnapshot{
		InvalidationsSent: s.InvalidationsSent.Load(), InvalidationsReceived: s.InvalidationsReceived.Load(),
		MissedClears: s.MissedClears.Load(), RemoteCalls: s.RemoteCalls.Load(), RemoteBytes: s.RemoteBytes.Load(),
		Evictions: s.Evictions.Load(), Exclusions: s.Exclusions.Load(), Resets: s.Resets.Load(), NearHits: s.NearHits.Load(),
	}
}

// Stats is what Cache.Stats returns: the benchmark and /metrics read it.
// Its JSON (in GET /v1/stats) names fields in snake_case, as the rest
// of the node's /v1 API does.
type Stats struct {
	Node    NodeStatsSnapshot              `json:"node"`
	Regions map[string]RegionStatsSnapshot `json:"regions"`
}
