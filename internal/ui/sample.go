package ui

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/beat"
	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/packcache"
	"github.com/shoal-dev/shoal/scheduler"
)

// Sample is what the sampler read at one time.
type Sample struct {
	Seq     uint64
	At      time.Time
	Self    string
	Version string
	Started time.Time
	Raft    cp.Status
	Mode    l2cache.ModeRecord
	Members []cluster.Member
	// Nodes are the members' counters, this node's first, then the
	// others' by name (those that answered PeerStats).
	Nodes []NodeSample
	// Table is the partition table this node uses (nil before the first);
	// Moved marks the partitions whose owner changed at the last new
	// epoch.
	Table *l2cache.PartitionTable
	Moved []bool
	// Packs is the pack cache's counters (nil when it is off).
	Packs *packcache.Stats
	// Front is the front's counters (zero before it starts).
	Front    gitfront.Stats
	HasFront bool
	Jobs     []scheduler.Status
	Events   []Event
}

// NodeSample is one member's counters, or why they are missing.
type NodeSample struct {
	Name  string
	Stats nodestats.Stats
	Err   string
}

// Event is one line of the cluster's timeline.
type Event struct {
	At     time.Time
	Kind   string // join, leave, fail, update, leader, table, mode
	Member string
	Text   string
}

// counters are a node's cache counters, summed over its regions, at one
// sample: what the charts are drawn from.
type counters struct {
	Hits, Misses, Loads, RefusedPuts, Evictions uint64
	InvSent, InvReceived, MissedClears          uint64
	// Lag is the invalidation lag histogram (l2cache.LagBucket), nil
	// while empty.
	Lag []uint64
}

// point is one sample's numbers in the ring.
type point struct {
	At    time.Time
	Nodes map[string]counters
	// PackHits and PackMisses are this node's pack cache lookups.
	PackHits, PackMisses uint64
	// Pools are this node's front pools (upload, receive, web).
	Pools []poolPoint
}

type poolPoint struct {
	InFlight, Queued int64
	Refused          uint64
}

// maxEvents bounds the timeline.
const maxEvents = 200

// sampler reads the node's parts, keeps the latest sample, the ring and
// the timeline, and publishes each page's live part to its streams.
type sampler struct {
	u      *UI
	kickCh chan struct{}

	mu     sync.Mutex // serialises sampling
	seq    uint64
	latest atomic.Pointer[Sample]

	ringMu sync.Mutex
	ring   []point // oldest first, at most ringCap
	cap    int
	events []Event
	// lastLeader, lastTerm, lastEpoch, lastMode: what the timeline last
	// recorded.
	lastLeader string
	lastTerm   uint64
	lastTable  *l2cache.PartitionTable
	lastMoved  []bool
	lastMode   l2cache.ModeRecord
}

func newSampler(u *UI) *sampler {
	n := int(u.cfg.Window/u.cfg.Interval) + 1
	return &sampler{u: u, kickCh: make(chan struct{}, 1), cap: n}
}

// kick asks for a sample now.
func (s *sampler) kick() {
	select {
	case s.kickCh <- struct{}{}:
	default:
	}
}

// minGap is the least time between two samples when kicks come in bursts.
const minGap = 200 * time.Millisecond

func (s *sampler) loop() {
	t := beat.NewTicker(s.u.cfg.Interval) // on the process's beat: see package beat
	defer t.Stop()
	s.sampleAndPublish()
	for {
		select {
		case <-s.u.done:
			return
		case <-t.C:
		case <-s.kickCh:
			select {
			case <-s.u.done:
				return
			case <-time.After(minGap):
			}
		}
		s.sampleAndPublish()
		s.u.sessions.sweep()
	}
}

// sampleAndPublish takes a sample and sends each watched page's live part
// to its streams.
func (s *sampler) sampleAndPublish() *Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.u.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	smp := s.take(ctx)
	s.latest.Store(smp)
	for _, t := range s.u.hub.topics() {
		msg, err := s.u.eventMessage(t, smp)
		if err != nil {
			s.u.log.Warn("ui: rendering a live update", "page", t.page, "err", err)
			continue
		}
		s.u.hub.publish(t, msg)
	}
	return smp
}

// take reads everything a sample holds.
func (s *sampler) take(ctx context.Context) *Sample {
	cfg := &s.u.cfg
	s.seq++
	smp := &Sample{Seq: s.seq, At: time.Now(), Self: cfg.Node.Name(), Version: cfg.Version, Started: cfg.Started,
		Raft: cfg.Store.Status(), Members: cfg.Node.Members()}
	slices.SortFunc(smp.Members, func(a, b cluster.Member) int { return compareNames(a.Name, b.Name) })
	src := cfg.Stats
	if src.Cache != nil {
		smp.Mode = src.Cache.ModeStatus()
	}
	if src.Cache != nil && src.Node != nil && src.Lease != nil {
		smp.Nodes = append(smp.Nodes, NodeSample{Name: smp.Self, Stats: src.Read()})
	}
	smp.Nodes = append(smp.Nodes, s.peers(ctx, smp.Members)...)
	if src.Keeper != nil {
		smp.Table = src.Keeper.Table()
	}
	if src.Packs != nil {
		ps := src.Packs.Stats()
		smp.Packs = &ps
	}
	if src.Front != nil {
		smp.Front, smp.HasFront = src.Front.Stats(), true
	}
	if cfg.Scheduler != nil {
		smp.Jobs = cfg.Scheduler.Snapshot()
	}
	s.record(smp)
	return smp
}

// peers reads the other alive members' counters, at once, each within
// PeerTimeout.
func (s *sampler) peers(ctx context.Context, members []cluster.Member) []NodeSample {
	cfg := &s.u.cfg
	if cfg.PeerStats == nil {
		return nil
	}
	var out []NodeSample
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range members {
		if m.Name == cfg.Node.Name() || m.State != cluster.StateAlive {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, cfg.PeerTimeout)
			defer cancel()
			st, err := cfg.PeerStats(ctx, m)
			ns := NodeSample{Name: m.Name, Stats: st}
			if err != nil {
				ns = NodeSample{Name: m.Name, Err: err.Error()}
			}
			mu.Lock()
			out = append(out, ns)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b NodeSample) int { return compareNames(a.Name, b.Name) })
	return out
}

// record adds the sample's numbers to the ring and its changes to the
// timeline, and fills Moved and Events.
func (s *sampler) record(smp *Sample) {
	p := point{At: smp.At, Nodes: map[string]counters{}}
	for _, n := range smp.Nodes {
		if n.Err == "" {
			p.Nodes[n.Name] = countersOf(n.Stats)
		}
	}
	if smp.Packs != nil {
		p.PackHits, p.PackMisses = smp.Packs.Hits, smp.Packs.Misses
	}
	for _, ps := range smp.Front.Pools {
		p.Pools = append(p.Pools, poolPoint{InFlight: ps.InFlight, Queued: ps.Queued, Refused: ps.Rejected + ps.TimedOut})
	}
	s.ringMu.Lock()
	defer s.ringMu.Unlock()
	if len(s.ring) == s.cap {
		copy(s.ring, s.ring[1:])
		s.ring = s.ring[:len(s.ring)-1]
	}
	s.ring = append(s.ring, p)
	if smp.Raft.Leader != "" && (smp.Raft.Leader != s.lastLeader || smp.Raft.Term != s.lastTerm) {
		s.addEventLocked(Event{At: smp.At, Kind: "leader", Member: smp.Raft.Leader,
			Text: fmt.Sprintf("%s leads the raft group (term %d)", smp.Raft.Leader, smp.Raft.Term)})
		s.lastLeader, s.lastTerm = smp.Raft.Leader, smp.Raft.Term
	}
	if t := smp.Table; t != nil && (s.lastTable == nil || t.Epoch != s.lastTable.Epoch) {
		moved := movedPartitions(s.lastTable, t)
		n := 0
		for _, m := range moved {
			if m {
				n++
			}
		}
		switch {
		case s.lastTable == nil:
		case !hasOwners(s.lastTable):
			s.addEventLocked(Event{At: smp.At, Kind: "table",
				Text: fmt.Sprintf("partition table epoch %d: the first with owners", t.Epoch)})
		default:
			s.addEventLocked(Event{At: smp.At, Kind: "table",
				Text: fmt.Sprintf("partition table epoch %d: %d of %d partitions changed owner", t.Epoch, n, len(t.Replicas))})
		}
		s.lastTable, s.lastMoved = t, moved
	}
	smp.Moved = s.lastMoved
	if smp.Mode.Mode != "" && smp.Mode != s.lastMode {
		if s.lastMode.Mode != "" {
			s.addEventLocked(Event{At: smp.At, Kind: "mode", Text: "cache mode " + smp.Mode.String()})
		}
		s.lastMode = smp.Mode
	}
	smp.Events = slices.Clone(s.events)
}

func hasOwners(t *l2cache.PartitionTable) bool {
	for p := range t.Replicas {
		if t.Owner(p) != "" {
			return true
		}
	}
	return false
}

// movedPartitions marks the partitions whose owner differs between two
// tables (all false for the first table).
func movedPartitions(old, t *l2cache.PartitionTable) []bool {
	moved := make([]bool, len(t.Replicas))
	if old == nil {
		return moved
	}
	for p := range t.Replicas {
		// A partition that had no owner (the table before the first
		// members) did not move.
		moved[p] = old.Owner(p) != "" && old.Owner(p) != t.Owner(p)
	}
	return moved
}

func (s *sampler) addEvent(e Event) {
	s.ringMu.Lock()
	defer s.ringMu.Unlock()
	s.addEventLocked(e)
}

func (s *sampler) addEventLocked(e Event) {
	if len(s.events) == maxEvents {
		copy(s.events, s.events[1:])
		s.events = s.events[:len(s.events)-1]
	}
	s.events = append(s.events, e)
}

// points copies the ring.
func (s *sampler) points() []point {
	s.ringMu.Lock()
	defer s.ringMu.Unlock()
	return slices.Clone(s.ring)
}

// current is the latest sample, taking the first if there is none yet.
func (s *sampler) current() *Sample {
	if smp := s.latest.Load(); smp != nil {
		return smp
	}
	return s.sampleAndPublish()
}

func countersOf(st nodestats.Stats) counters {
	c := counters{Evictions: st.Cache.Node.Evictions, InvSent: st.Cache.Node.InvalidationsSent,
		InvReceived: st.Cache.Node.InvalidationsReceived, MissedClears: st.Cache.Node.MissedClears,
		Lag: st.Cache.Node.InvalidationLag}
	for _, r := range st.Cache.Regions {
		c.Hits += r.Hits
		c.Misses += r.Misses
		c.Loads += r.Loads
		c.RefusedPuts += r.RefusedPuts
	}
	return c
}

// compareNames orders node names naturally (node2 before node10).
func compareNames(a, b string) int {
	ta, na := splitNumber(a)
	tb, nb := splitNumber(b)
	if ta != tb {
		if ta < tb {
			return -1
		}
		return 1
	}
	switch {
	case na < nb:
		return -1
	case na > nb:
		return 1
	}
	if a < b {
		return -1
	} else if a > b {
		return 1
	}
	return 0
}

// splitNumber splits a trailing decimal number off s.
func splitNumber(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' && len(s)-i < 9 {
		i--
	}
	n := 0
	for _, c := range s[i:] {
		n = n*10 + int(c-'0')
	}
	return s[:i], n
}
