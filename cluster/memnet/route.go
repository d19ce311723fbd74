package memnet

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
)

// TrafficKind says what a unit of traffic is.
type TrafficKind int

const (
	// Packet is a memberlist packet (UDP-like).
	Packet TrafficKind = iota + 1
	// Frame is a wire.Frame on a connection from Host.Dial.
	Frame
)

func (k TrafficKind) String() string {
	switch k {
	case Packet:
		return "packet"
	case Frame:
		return "frame"
	}
	return fmt.Sprintf("TrafficKind(%d)", int(k))
}

// Traffic describes one packet or frame, for Faults.Match.
type Traffic struct {
	From, To string // host IPs
	Kind     TrafficKind
	// Frame is the frame, for Kind == Frame; nil for packets. It is the
	// network's copy: read it, do not keep or modify it.
	Frame *wire.Frame
}

// Faults are applied to every packet and frame that Match selects.
// Memberlist streams are never faulted, only refused by partitions.
type Faults struct {
	DropRate      float64 // probability of silently discarding it
	DuplicateRate float64 // probability of delivering it twice
	// Each delivered copy waits a uniform time in [DelayMin, DelayMax]
	// (DelayMin when DelayMax is smaller); separate delays let later items
	// overtake earlier ones.
	DelayMin, DelayMax time.Duration
	// Match selects the traffic the faults apply to; nil means all. It is
	// called with the network's lock held, so it must be quick and must not
	// call the Network.
	Match func(Traffic) bool
}

// Counters count what the network did with packets or frames. Once
// nothing is in flight, Sent + Duplicated == Delivered + Dropped + Blocked
// + Lost.
type Counters struct {
	Sent       uint64 // handed to the network
	Delivered  uint64 // copies handed to a receiver; a duplicate counts twice
	Dropped    uint64 // discarded by Faults.DropRate
	Duplicated uint64 // sent twice by Faults.DuplicateRate
	Blocked    uint64 // discarded by a partition
	// Lost copies found no receiver: nothing bound at the address, the
	// receiver closed or its queue full, or the network closed first.
	Lost uint64
}

// InFlight is the number of copies still waiting out a delay.
func (c Counters) InFlight() uint64 {
	return c.Sent + c.Duplicated - c.Delivered - c.Dropped - c.Blocked - c.Lost
}

func (c *Counters) add(d Counters) {
	c.Sent += d.Sent
	c.Delivered += d.Delivered
	c.Dropped += d.Dropped
	c.Duplicated += d.Duplicated
	c.Blocked += d.Blocked
	c.Lost += d.Lost
}

// Stats are the network's counters: the embedded Counters total both
// kinds, Packets and Frames split them.
type Stats struct {
	Counters
	Packets, Frames Counters
}

// countLocked counts d under statsMu (the caller may hold mu).
func (n *Network) countLocked(k TrafficKind, d Counters) {
	n.statsMu.Lock()
	defer n.statsMu.Unlock()
	n.stats.Counters.add(d)
	switch k {
	case Packet:
		n.stats.Packets.add(d)
	case Frame:
		n.stats.Frames.add(d)
	}
}

// route decides the fate of one packet or frame and carries it out:
// deliver it now, later, twice or never. deliver hands one copy to the
// receiver and reports whether the receiver took it; clone is set for a
// duplicate's second copy, which must not share memory with the first.
// deliver runs without the network's lock, on the caller's goroutine when
// there is no delay, so that undelayed traffic keeps its order.
func (n *Network) route(tr Traffic, deliver func(clone bool) bool) {
	if n.perfect.Load() {
		// Nothing to decide: delivered at once, without the lock that
		// every host's traffic would otherwise queue on.
		n.countLocked(tr.Kind, Counters{Sent: 1})
		n.settle(tr.Kind, deliver(false))
		return
	}
	n.mu.Lock()
	var now []bool // clone flags of the copies to deliver at once
	for i, d := range n.decideLocked(tr) {
		clone := i > 0
		if d > 0 {
			n.scheduleLocked(tr.Kind, d, func() bool { return deliver(clone) })
		} else {
			now = append(now, clone)
		}
	}
	n.mu.Unlock()
	for _, clone := range now {
		n.settle(tr.Kind, deliver(clone))
	}
}

// decideLocked counts tr as sent and returns the delay of each copy to
// deliver: none when blocked, dropped or the network is closed, two when
// duplicated. The generator is consulted only for faults that can apply,
// so a perfect network consumes no randomness.
func (n *Network) decideLocked(tr Traffic) []time.Duration {
	if n.closed {
		return nil
	}
	n.countLocked(tr.Kind, Counters{Sent: 1})
	if !n.reachableLocked(tr.From, tr.To) {
		n.countLocked(tr.Kind, Counters{Blocked: 1})
		return nil
	}
	f := n.faults
	if f.Match != nil && !f.Match(tr) {
		return []time.Duration{0}
	}
	if n.chanceLocked(f.DropRate) {
		n.countLocked(tr.Kind, Counters{Dropped: 1})
		return nil
	}
	delays := []time.Duration{n.delayLocked(f)}
	if n.chanceLocked(f.DuplicateRate) {
		n.countLocked(tr.Kind, Counters{Duplicated: 1})
		delays = append(delays, n.delayLocked(f))
	}
	return delays
}

func (n *Network) chanceLocked(p float64) bool {
	return p > 0 && n.rng.Float64() < p
}

func (n *Network) delayLocked(f Faults) time.Duration {
	if f.DelayMax <= f.DelayMin {
		return f.DelayMin
	}
	return f.DelayMin + time.Duration(n.rng.Int64N(int64(f.DelayMax-f.DelayMin)+1))
}

// scheduleLocked runs deliver after d on a timer that Close can stop.
func (n *Network) scheduleLocked(k TrafficKind, d time.Duration, deliver func() bool) {
	n.running.Add(1)
	var t *time.Timer
	// The callback cannot read t before it is assigned: it takes n.mu
	// first, which the caller holds until after the assignment.
	t = time.AfterFunc(d, func() {
		defer n.running.Done()
		n.mu.Lock()
		delete(n.timers, t)
		closed := n.closed
		n.mu.Unlock()
		n.settle(k, !closed && deliver())
	})
	n.timers[t] = k
}

// settle counts one copy as delivered or lost.
func (n *Network) settle(k TrafficKind, delivered bool) {
	if delivered {
		n.countLocked(k, Counters{Delivered: 1})
	} else {
		n.countLocked(k, Counters{Lost: 1})
	}
}

// order keeps one direction of a frame connection a stream: frames the
// faults left alone (Match false, or no delay drawn) never overtake an
// earlier frame that is still delayed, as bytes on a TCP connection
// cannot, while delayed frames may still overtake each other. A protocol
// that marks the end of its traffic on a connection (the peer RPC's
// retirement handshake) can then rely on the mark arriving last, as it
// does over TCP. Guarded by Network.mu.
type order struct {
	next     atomic.Uint64     // sequence number of the next frame sent
	inflight map[uint64]int    // delayed copies not yet delivered, by sequence
	waiting  []waitingDelivery // undelayed copies held behind them, in order
	// held is len(inflight) + len(waiting), read without the lock by
	// routeFrame's fast path.
	held atomic.Int64
}

func (o *order) setHeldLocked() { o.held.Store(int64(len(o.inflight) + len(o.waiting))) }

type waitingDelivery struct {
	seq     uint64
	deliver func() bool
}

// heldLocked reports whether an undelayed frame with sequence seq must
// wait: an earlier frame is still delayed, or others already wait.
func (o *order) heldLocked(seq uint64) bool {
	if len(o.waiting) > 0 {
		return true
	}
	for s := range o.inflight {
		if s < seq {
			return true
		}
	}
	return false
}

// releaseLocked removes and returns the waiting deliveries that no
// delayed frame precedes any more.
func (o *order) releaseLocked() []waitingDelivery {
	i := 0
	for ; i < len(o.waiting); i++ {
		for s := range o.inflight {
			if s < o.waiting[i].seq {
				goto done
			}
		}
	}
done:
	out := o.waiting[:i:i]
	o.waiting = o.waiting[i:]
	return out
}

// routeFrame is route for a frame sent on a connection whose direction
// keeps the order o.
func (n *Network) routeFrame(o *order, tr Traffic, deliver func(clone bool) bool) {
	if n.perfect.Load() && o.held.Load() == 0 {
		// No fault to decide and no earlier frame of the connection
		// delayed: delivered at once, without the network's lock.
		o.next.Add(1)
		n.countLocked(tr.Kind, Counters{Sent: 1})
		n.settle(tr.Kind, deliver(false))
		return
	}
	n.mu.Lock()
	seq := o.next.Add(1) - 1
	var now []bool
	for i, d := range n.decideLocked(tr) {
		clone := i > 0
		switch {
		case d > 0:
			if o.inflight == nil {
				o.inflight = map[uint64]int{}
			}
			o.inflight[seq]++
			n.scheduleLocked(tr.Kind, d, func() bool {
				ok := deliver(clone)
				n.mu.Lock()
				if o.inflight[seq]--; o.inflight[seq] == 0 {
					delete(o.inflight, seq)
				}
				// Delivered under the lock, so that releases from
				// concurrent timers keep their order.
				for _, w := range o.releaseLocked() {
					if w.deliver() {
						n.countLocked(tr.Kind, Counters{Delivered: 1})
					} else {
						n.countLocked(tr.Kind, Counters{Lost: 1})
					}
				}
				o.setHeldLocked()
				n.mu.Unlock()
				return ok
			})
		case o.heldLocked(seq):
			o.waiting = append(o.waiting, waitingDelivery{seq: seq, deliver: func() bool { return deliver(clone) }})
		default:
			now = append(now, clone)
		}
	}
	o.setHeldLocked()
	n.mu.Unlock()
	for _, clone := range now {
		n.settle(tr.Kind, deliver(clone))
	}
}
