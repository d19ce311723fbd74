package packcache

import "sync/atomic"

// Stats are the cache's counters since New, for metrics and benchmarks.
type Stats struct {
	Hits     uint64 // lookups served from a published entry
	Misses   uint64 // lookups that started a git process for an entry
	Joined   uint64 // lookups that read an entry still being produced
	Bypasses uint64 // requests sent straight to git
	Rejected uint64 // malformed requests

	// LsRefsHits, LsRefsMisses and LsRefsJoined are the v2 ls-refs
	// lookups among Hits, Misses and Joined (the rest are fetches).
	LsRefsHits, LsRefsMisses, LsRefsJoined uint64

	BytesFromCache uint64 // bytes served to clients on hits
	BytesFromGit   uint64 // bytes served on misses, joins and bypasses
	BytesWritten   uint64 // bytes written to cache files

	GitStarted uint64 // git upload-pack processes started (entries and bypasses)
	Published  uint64 // entries published
	Failed     uint64 // productions that did not publish (error, incomplete, invalidated)
	Evictions  uint64 // entries evicted for the budget or the free-space floor
	Expired    uint64 // entries dropped after their TTL
	Dropped    uint64 // entries dropped by Invalidate or Forget
	Pushes     uint64 // pushes begun (BeginPush succeeded)

	Entries int   // published entries now
	Bytes   int64 // bytes of published entries now
}

// counters are the atomic counterparts of Stats.
type counters struct {
	hits, misses, joined, bypasses, rejected atomic.Uint64
	lsHits, lsMisses, lsJoined               atomic.Uint64
	fromCache, fromGit, written              atomic.Uint64
	gitStarted, published, failed            atomic.Uint64
	evictions, expired, dropped              atomic.Uint64
	pushes                                   atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Joined: c.joined.Load(),
		Bypasses: c.bypasses.Load(), Rejected: c.rejected.Load(),
		LsRefsHits: c.lsHits.Load(), LsRefsMisses: c.lsMisses.Load(), LsRefsJoined: c.lsJoined.Load(),
		BytesFromCache: c.fromCache.Load(), BytesFromGit: c.fromGit.Load(),
		BytesWritten: c.written.Load(), GitStarted: c.gitStarted.Load(),
		Published: c.published.Load(), Failed: c.failed.Load(),
		Evictions: c.evictions.Load(), Expired: c.expired.Load(), Dropped: c.dropped.Load(),
		Pushes: c.pushes.Load(),
	}
}

// count adds a lookup to all, and to ls when it is an ls-refs one.
func (c *counters) count(all, ls *atomic.Uint64, isLs bool) {
	all.Add(1)
	if isLs {
		ls.Add(1)
	}
}
