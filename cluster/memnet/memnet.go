// Package memnet is an in-memory network for tests of shoal's protocol
// logic: it stands in for memberlist's transport (packets and streams) and
// for the peer RPC's wire.Network (frames), and it can drop, delay (and so
// reorder), duplicate and partition traffic between chosen hosts. Every
// random decision comes from one generator seeded by New, so a test that
// sends the same traffic in the same order sees the same faults.
//
// Hosts are named by IP address ("10.0.0.1") and are the unit of
// partition: a node's memberlist transport and RPC listener on the same
// host share its fate.
package memnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
)

// TrafficKind says what a unit of traffic is.
type TrafficKind int

const (
	// Packet is a memberlist packet (UDP-like).
	Packet TrafficKind = iota + 1
	// Frame is a wire frame on a peer RPC connection.
	Frame
)

// Traffic describes one packet or frame, for Faults.Match.
type Traffic struct {
	From, To string // host IPs
	Kind     TrafficKind
	// Frame is the frame, for Kind == Frame. Read it, do not keep or modify it.
	Frame *wire.Frame
}

// Faults are applied to every packet and frame that Match selects.
// Memberlist streams are never faulted, only blocked by partitions.
type Faults struct {
	DropRate      float64 // probability of silently discarding it
	DuplicateRate float64 // probability of delivering it twice
	// Each delivery waits a uniform time in [DelayMin, DelayMax]; separate
	// delays let later items overtake earlier ones.
	DelayMin, DelayMax time.Duration
	// Match selects the traffic the faults apply to; nil means all. It is
	// called with the network's lock held and must not call the network.
	Match func(Traffic) bool
}

// Stats counts what the network did with packets and frames.
type Stats struct {
	Sent, Delivered, Dropped, Duplicated, Blocked uint64
}

// Network is an in-memory network. Its methods are safe for concurrent use.
type Network struct {
	mu         sync.Mutex
	rng        *rand.Rand
	faults     Faults
	groups     map[string]int // host → partition group; 0 = reaches all
	isolated   map[string]bool
	hosts      map[string]*Host
	listeners  map[string]*listener
	transports map[string]*Transport
	timers     map[*time.Timer]struct{}
	stats      Stats
	closed     bool
	wg         sync.WaitGroup // delayed deliveries running
}

// New returns an empty network whose fault decisions are seeded by seed.
func New(seed uint64) *Network {
	return &Network{
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		groups: map[string]int{}, isolated: map[string]bool{}, hosts: map[string]*Host{},
		listeners: map[string]*listener{}, transports: map[string]*Transport{},
		timers: map[*time.Timer]struct{}{},
	}
}

// Host returns the host with this IP, creating it.
func (n *Network) Host(ip string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.hosts[ip]
	if h == nil {
		h = &Host{n: n, ip: ip, nextPort: 20000}
		n.hosts[ip] = h
	}
	return h
}

// SetFaults replaces the faults; the zero Faults is a perfect network.
func (n *Network) SetFaults(f Faults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = f
}

// Partition splits the named hosts into groups that cannot reach each
// other, in either direction. Hosts not named reach everyone. It replaces
// any earlier partition.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.groups = map[string]int{}
	for i, g := range groups {
		for _, h := range g {
			n.groups[h] = i + 1
		}
	}
}

// Isolate cuts one host off from every other host.
func (n *Network) Isolate(ip string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[ip] = true
}

// Heal removes every partition and isolation.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.groups = map[string]int{}
	n.isolated = map[string]bool{}
}

// Stats returns the counters.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Close stops every pending delayed delivery and waits for those already
// running; later traffic is discarded. Safe to call twice.
func (n *Network) Close() error {
	n.mu.Lock()
	n.closed = true
	for t := range n.timers {
		if t.Stop() {
			n.wg.Done()
		}
	}
	n.timers = map[*time.Timer]struct{}{}
	n.mu.Unlock()
	n.wg.Wait()
	return nil
}

func (n *Network) reachableLocked(from, to string) bool {
	if from == to {
		return true
	}
	if n.isolated[from] || n.isolated[to] {
		return false
	}
	gf, gt := n.groups[from], n.groups[to]
	return gf == 0 || gt == 0 || gf == gt
}

// route decides the fate of one packet or frame and delivers it: now,
// later, twice, or never. deliver runs without the network's lock.
func (n *Network) route(tr Traffic, deliver func()) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.stats.Sent++
	if !n.reachableLocked(tr.From, tr.To) {
		n.stats.Blocked++
		n.mu.Unlock()
		return
	}
	f := n.faults
	copies, delays := 1, [2]time.Duration{}
	if f.Match == nil || f.Match(tr) {
		if f.DropRate > 0 && n.rng.Float64() < f.DropRate {
			n.stats.Dropped++
			n.mu.Unlock()
			return
		}
		if f.DuplicateRate > 0 && n.rng.Float64() < f.DuplicateRate {
			copies = 2
			n.stats.Duplicated++
		}
		for i := 0; i < copies; i++ {
			delays[i] = f.DelayMin
			if f.DelayMax > f.DelayMin {
				delays[i] += time.Duration(n.rng.Int64N(int64(f.DelayMax - f.DelayMin + 1)))
			}
		}
	}
	n.stats.Delivered += uint64(copies)
	var now int
	for i := 0; i < copies; i++ {
		if delays[i] <= 0 {
			now++
			continue
		}
		n.scheduleLocked(delays[i], deliver)
	}
	n.mu.Unlock()
	for i := 0; i < now; i++ {
		deliver()
	}
}

func (n *Network) scheduleLocked(d time.Duration, deliver func()) {
	n.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		defer n.wg.Done()
		n.mu.Lock()
		delete(n.timers, t)
		closed := n.closed
		n.mu.Unlock()
		if !closed {
			deliver()
		}
	})
	n.timers[t] = struct{}{}
}

// Host is one machine of the network.
type Host struct {
	n        *Network
	ip       string
	nextPort int // guarded by n.mu
}

// IP is the host's address.
func (h *Host) IP() string { return h.ip }

// bindLocked checks that addr is on this host and resolves port 0; used
// holds the addresses already bound for this kind of endpoint.
func (h *Host) bindLocked(addr string, used func(string) bool) (string, error) {
	ip, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if ip != h.ip {
		return "", fmt.Errorf("memnet: host %s cannot bind %s", h.ip, addr)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", fmt.Errorf("memnet: bad port in %q", addr)
	}
	if port == 0 {
		for used(net.JoinHostPort(h.ip, strconv.Itoa(h.nextPort))) {
			h.nextPort++
		}
		port = h.nextPort
		h.nextPort++
	}
	a := net.JoinHostPort(h.ip, strconv.Itoa(port))
	if used(a) {
		return "", fmt.Errorf("memnet: %s: address already in use", a)
	}
	return a, nil
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

var errRefused = errors.New("connection refused")

// Listen listens for wire connections on "ip:port" of this host.
func (h *Host) Listen(addr string) (wire.Listener, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	a, err := h.bindLocked(addr, func(a string) bool { return n.listeners[a] != nil })
	if err != nil {
		return nil, err
	}
	l := &listener{n: n, addr: a, wake: make(chan struct{}, 1), done: make(chan struct{})}
	n.listeners[a] = l
	return l, nil
}

// Dial connects from this host to a listener.
func (h *Host) Dial(ctx context.Context, addr string) (wire.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, wire.ErrClosed
	}
	l := n.listeners[addr]
	switch {
	case !n.reachableLocked(h.ip, hostOf(addr)):
		return nil, fmt.Errorf("memnet: dial %s from %s: host unreachable", addr, h.ip)
	case l == nil:
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, errRefused)
	}
	h.nextPort++
	local := net.JoinHostPort(h.ip, strconv.Itoa(40000+h.nextPort%20000))
	client, server := newConnPair(n, local, addr)
	if !l.push(server) {
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, errRefused)
	}
	return client, nil
}
