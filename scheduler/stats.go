package scheduler

import "sync/atomic"

// Stats counts a scheduler's work on this node. The fields are read with
// Load; the benchmark reads these same counters.
type Stats struct {
	// Claims: clustered runs this node claimed (won).
	Claims atomic.Uint64
	// ClaimConflicts: CompareAndSets this node lost to a concurrent change.
	ClaimConflicts atomic.Uint64
	// ClaimErrors: claims abandoned for a store error (retried later).
	ClaimErrors atomic.Uint64
	// Runs and Failures: runs started here, and those that failed or
	// panicked.
	Runs, Failures atomic.Uint64
	// Misfires: claims that coalesced missed fire times.
	Misfires atomic.Uint64
	// Refreshes and RefreshErrors: full re-reads of the clustered jobs.
	Refreshes, RefreshErrors atomic.Uint64
	// Announced, AnnouncementsReceived, MissedReports: bus traffic.
	Announced, AnnouncementsReceived, MissedReports atomic.Uint64
}
