// Package memnet is an in-memory network for tests of shoal's cluster: it
// stands in for memberlist's transport (packets and streams) and for the
// peer RPC's wire.Network (frames), and it can drop, delay (and so
// reorder), duplicate and partition traffic between chosen hosts.
//
// Every random decision comes from one generator seeded by New, so a test
// that sends the same traffic in the same order sees the same faults.
// Traffic from goroutines racing each other (memberlist's probes, say)
// consumes the generator in a racy order; only the decisions about one
// test's sequential sends are then repeatable.
//
// Hosts are named by IP address ("10.0.0.1") and are the unit of
// partition: a node's memberlist transport and RPC listener on the same
// host share its fate.
//
// Everything in the package is safe for concurrent use. The Network owns
// every timer it starts; Close stops them and closes every endpoint, so a
// test that closes its Network leaks nothing.
package memnet

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// pcgStream is the second word of the PCG state: fixed, so that one seed
// is one sequence of decisions.
const pcgStream = 0x9e3779b97f4a7c15

// Network is an in-memory network of hosts.
type Network struct {
	mu         sync.RWMutex
	rng        *rand.Rand // every fault decision
	faults     Faults
	group      map[string]int // host → partition group; absent: reaches all
	isolated   map[string]bool
	hosts      map[string]*Host
	listeners  map[string]*listener  // by "ip:port"
	transports map[string]*Transport // by "ip:port"
	conns      map[*conn]struct{}    // open frame connection ends
	timers     map[*time.Timer]TrafficKind
	closed     bool

	// perfect: no faults, partitions or isolation, and not closed, so
	// traffic is delivered without taking mu (route's fast path). Written
	// under mu.
	perfect atomic.Bool

	statsMu sync.Mutex // guards stats; taken after mu when both are
	stats   Stats

	// running counts delayed deliveries scheduled or under way, so that
	// Close can wait for the ones whose timer already fired.
	running sync.WaitGroup
}

// New returns an empty, perfect network. seed seeds the single generator
// (a PCG) behind every fault decision.
func New(seed uint64) *Network {
	n := &Network{
		rng:        rand.New(rand.NewPCG(seed, pcgStream)),
		group:      map[string]int{},
		isolated:   map[string]bool{},
		hosts:      map[string]*Host{},
		listeners:  map[string]*listener{},
		transports: map[string]*Transport{},
		conns:      map[*conn]struct{}{},
		timers:     map[*time.Timer]TrafficKind{},
	}
	n.perfect.Store(true)
	return n
}

// updatePerfectLocked recomputes perfect after a change of faults,
// partitions or state.
func (n *Network) updatePerfectLocked() {
	f := n.faults
	n.perfect.Store(!n.closed && len(n.group) == 0 && len(n.isolated) == 0 &&
		f.DropRate <= 0 && f.DuplicateRate <= 0 && f.DelayMin <= 0 && f.DelayMax <= 0)
}

// Host returns the host with this IP address, creating it. Hosts outlive
// Close, but nothing can be bound or dialled on a closed network.
func (n *Network) Host(ip string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.hosts[ip]
	if h == nil {
		h = &Host{n: n, ip: ip, nextPort: firstPickedPort, nextEphemeral: firstEphemeral}
		n.hosts[ip] = h
	}
	return h
}

// SetFaults replaces the current faults; the zero Faults is a perfect
// network. Packets and frames already in flight keep their fate.
func (n *Network) SetFaults(f Faults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = f
	n.updatePerfectLocked()
}

// Partition splits the named hosts into groups that cannot reach each
// other, in either direction; hosts not named reach everyone. It replaces
// any earlier Partition but keeps isolated hosts isolated. A host named in
// two groups belongs to the last.
//
// A partition discards packets and frames sent across it (counted as
// Blocked) and refuses new connections across it. Connections already open
// are not closed, but frames sent on them across it are discarded.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[string]int{}
	for i, g := range groups {
		for _, ip := range g {
			n.group[ip] = i + 1
		}
	}
	n.updatePerfectLocked()
}

// Isolate cuts one host off from every other host, like a partition.
func (n *Network) Isolate(ip string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[ip] = true
	n.updatePerfectLocked()
}

// Heal removes every partition and isolation.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[string]int{}
	n.isolated = map[string]bool{}
	n.updatePerfectLocked()
}

// Stats returns a snapshot of the counters.
func (n *Network) Stats() Stats {
	n.statsMu.Lock()
	defer n.statsMu.Unlock()
	return n.stats
}

// Close shuts the network down: it stops every pending delayed delivery
// (those copies count as Lost), waits for deliveries already under way,
// closes every listener and frame connection (unblocking Accept and Recv)
// and shuts down every transport. Later traffic is discarded and binds and
// dials fail. Memberlist streams already open keep working: their owners
// close them. Close is safe to call twice and always returns nil.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.running.Wait()
		return nil
	}
	n.closed = true
	n.updatePerfectLocked()
	n.stopTimersLocked()
	ls, cs, ts := n.endpointsLocked()
	n.mu.Unlock()

	for _, l := range ls {
		l.Close()
	}
	for _, c := range cs {
		c.Close()
	}
	for _, t := range ts {
		t.Shutdown()
	}
	n.running.Wait()
	return nil
}

func (n *Network) stopTimersLocked() {
	for t, kind := range n.timers {
		// Stop fails for a timer that has fired: its callback is running
		// and will see n.closed and account for itself.
		if t.Stop() {
			n.countLocked(kind, Counters{Lost: 1})
			n.running.Done()
		}
	}
	n.timers = nil
}

// endpointsLocked lists what Close must close; it closes them after
// releasing n.mu, since closing takes the lock to deregister.
func (n *Network) endpointsLocked() ([]*listener, []*conn, []*Transport) {
	ls := make([]*listener, 0, len(n.listeners))
	for _, l := range n.listeners {
		ls = append(ls, l)
	}
	cs := make([]*conn, 0, len(n.conns))
	for c := range n.conns {
		cs = append(cs, c)
	}
	ts := make([]*Transport, 0, len(n.transports))
	for _, t := range n.transports {
		ts = append(ts, t)
	}
	return ls, cs, ts
}

// reachableLocked reports whether from can send to to now.
func (n *Network) reachableLocked(from, to string) bool {
	if from == to {
		return true
	}
	if n.isolated[from] || n.isolated[to] {
		return false
	}
	gf, gt := n.group[from], n.group[to]
	return gf == 0 || gt == 0 || gf == gt
}
