package cluster

import (
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. Memberlist calls the event
// methods with its node lock held, one at a time, which is what keeps
// events in order; nothing here may block.
type delegate struct{ n *Node }

func (d *delegate) NodeMeta(limit int) []byte {
	d.n.mu.Lock()
	m := d.n.self
	d.n.mu.Unlock()
	b, err := m.encode()
	if err != nil || len(b) > limit {
		d.n.cfg.Logger.Error("cluster: node metadata does not fit", "bytes", len(b), "limit", limit, "err", err)
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return d.n.bus.localState() }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     { d.n.bus.mergeState(buf) }

func (d *delegate) NotifyJoin(node *memberlist.Node) {
	m, prev := d.record(node, StateAlive)
	if prev == StateFailed || prev == StateLeft {
		// It was gone and is back: whatever it sent while we considered
		// it gone did not reach us.
		d.n.bus.memberRejoined(node.Name)
	}
	d.n.emit(Event{Type: EventJoin, Member: m})
}

func (d *delegate) NotifyLeave(node *memberlist.Node) {
	st, typ := StateFailed, EventFail
	if d.announcedLeave(node) {
		st, typ = StateLeft, EventLeave
	}
	m, _ := d.record(node, st)
	if st == StateFailed {
		d.n.failures.Add(1)
	}
	d.n.bus.memberDeparted(node.Name)
	d.n.rpc.Disconnect(node.Name)
	d.n.emit(Event{Type: typ, Member: m})
}

func (d *delegate) NotifyUpdate(node *memberlist.Node) {
	m, _ := d.record(node, StateAlive)
	d.n.emit(Event{Type: EventUpdate, Member: m})
}

// announcedLeave reports whether the node said it was leaving, in this
// incarnation, and forgets that it did.
func (d *delegate) announcedLeave(node *memberlist.Node) bool {
	meta, err := decodeMeta(node.Meta)
	n := d.n
	n.mu.Lock()
	defer n.mu.Unlock()
	inc, ok := n.leaving[node.Name]
	delete(n.leaving, node.Name)
	return ok && err == nil && inc == meta.Incarnation
}

// record stores the member's new state and returns it with the previous one.
func (d *delegate) record(node *memberlist.Node, st MemberState) (Member, MemberState) {
	meta, err := decodeMeta(node.Meta)
	if err != nil {
		d.n.cfg.Logger.Warn("cluster: member with unreadable metadata", "member", node.Name, "err", err)
	}
	n := d.n
	n.mu.Lock()
	defer n.mu.Unlock()
	var prev MemberState
	m := n.members[node.Name]
	if m == nil {
		m = &Member{Name: node.Name}
		n.members[node.Name] = m
	} else {
		prev = m.State
	}
	m.Addr = node.Address()
	if err == nil {
		m.Meta = meta
	}
	m.State, m.Since = st, n.cfg.Now()
	out := *m
	if st == StateFailed || st == StateLeft {
		n.pruneLocked(m.Since)
	}
	return out, prev
}

// emit queues an event for every subscriber.
func (n *Node) emit(e Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for s := range n.subs {
		s.push(e)
	}
}

// NotifyMerge refuses to merge with nodes whose metadata is unreadable, or
// that run the peer RPC with TLS when this node does not, or without when
// it does.
// Nodes started with another --cache-mode are welcome: the cache mode is
// the cluster's, kept in the consistent store, and every node adopts it
// (l2cache.ModeKeeper).
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if err := d.checkMeta(p); err != nil {
			return err
		}
	}
	return nil
}

// NotifyAlive keeps a node with unreadable metadata, or TLS unlike this
// node's, out of this node's view.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error { return d.checkMeta(peer) }

func (d *delegate) checkMeta(p *memberlist.Node) error {
	if p.Name == d.n.cfg.Name {
		return nil
	}
	m, err := decodeMeta(p.Meta)
	if err == nil && m.TLS != (d.n.cfg.TLS != nil) {
		// Refused here, at the gossip: a member that cannot speak the
		// peer RPC or raft with this node would still be counted in raft's
		// configuration and given partitions.
		if d.n.cfg.TLS != nil {
			err = errors.New("it runs the peer RPC and raft without TLS and this node with mutual TLS " +
				"(start it with --tls-ca, --tls-cert and --tls-key: 'shoal tls')")
		} else {
			err = errors.New("it runs the peer RPC and raft over mutual TLS and this node without " +
				"(start this node with --tls-ca, --tls-cert and --tls-key: 'shoal tls')")
		}
		d.n.refusals.refuse(ListenerGossip, ReasonTLSMismatch, p.Address(), p.Name, err.Error())
	}
	if err != nil {
		err = fmt.Errorf("cluster: refusing %s: %w", p.Name, err)
		d.n.mu.Lock()
		d.n.refused = err
		d.n.mu.Unlock()
		return err
	}
	return nil
}
