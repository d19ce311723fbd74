package resp

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the per-command latency
// histogram, in seconds (the last bucket is unbounded).
var LatencyBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5}

// cmdStat counts one command's calls.
type cmdStat struct {
	calls, failed, usec atomic.Uint64
	buckets             []atomic.Uint64 // len(LatencyBuckets)+1
}

type cmdStats struct {
	by      map[string]*cmdStat // fixed at start: one per command, and "unknown"
	unknown *cmdStat
}

func newCmdStats() *cmdStats {
	s := &cmdStats{by: map[string]*cmdStat{}}
	for name := range commands {
		s.by[name] = &cmdStat{buckets: make([]atomic.Uint64, len(LatencyBuckets)+1)}
	}
	s.unknown = &cmdStat{buckets: make([]atomic.Uint64, len(LatencyBuckets)+1)}
	return s
}

func (s *cmdStats) record(spec *command, d time.Duration, failed bool) {
	st := s.unknown
	if spec != nil {
		st = s.by[spec.name]
	}
	st.calls.Add(1)
	if failed {
		st.failed.Add(1)
	}
	st.usec.Add(uint64(d.Microseconds()))
	sec := d.Seconds()
	i, _ := slices.BinarySearch(LatencyBuckets, sec)
	st.buckets[i].Add(1)
}

func (s *cmdStats) reset() {
	for _, st := range s.by {
		st.calls.Store(0)
		st.failed.Store(0)
		st.usec.Store(0)
		for i := range st.buckets {
			st.buckets[i].Store(0)
		}
	}
}

// CommandStats is one command's counters on this node.
type CommandStats struct {
	Name          string
	Calls, Failed uint64
	Usec          uint64
	// Buckets counts calls by latency: Buckets[i] those at most
	// LatencyBuckets[i] (and above the previous bound); the last, those
	// above every bound.
	Buckets []uint64
}

// Stats are the server's counters.
type Stats struct {
	Connected                   int
	Accepted, Rejected, Command uint64
	// TrackingResets: tracking connections told to drop keys that no write
	// changed (all keys after a lease lapse or reset, a partition's keys
	// after it changed owner). PushKills: connections closed because an
	// invalidation or message could not be written to them in time.
	TrackingResets, PushKills uint64
	Commands                  []CommandStats // commands called at least once, by name
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Connected: len(s.conns)}
	s.mu.Unlock()
	st.Accepted, st.Rejected, st.Command = s.accepted.Load(), s.rejected.Load(), s.totCmd.Load()
	st.TrackingResets, st.PushKills = s.trackResets.Load(), s.pushKills.Load()
	add := func(name string, c *cmdStat) {
		calls := c.calls.Load()
		if calls == 0 {
			return
		}
		cs := CommandStats{Name: name, Calls: calls, Failed: c.failed.Load(), Usec: c.usec.Load(), Buckets: make([]uint64, len(c.buckets))}
		for i := range c.buckets {
			cs.Buckets[i] = c.buckets[i].Load()
		}
		st.Commands = append(st.Commands, cs)
	}
	for name, c := range s.stats.by {
		add(name, c)
	}
	add("unknown", s.stats.unknown)
	slices.SortFunc(st.Commands, func(a, b CommandStats) int { return strings.Compare(a.Name, b.Name) })
	return st
}

func (s *Server) commandStatsInfo() string {
	var b strings.Builder
	for _, c := range s.Stats().Commands {
		if c.Name == "unknown" {
			continue
		}
		per := 0.0
		if c.Calls > 0 {
			per = float64(c.Usec) / float64(c.Calls)
		}
		fmt.Fprintf(&b, "cmdstat_%s:calls=%d,usec=%d,usec_per_call=%.2f,rejected_calls=0,failed_calls=%d\r\n", c.Name, c.Calls, c.Usec, per, c.Failed)
	}
	return b.String()
}
