package cp

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Patient reads: a linearizable read confirmed by the appends raft sends
// anyway.
//
// A linearizable read on the leader needs a leadership check that began
// after the read came: a quorum that accepted, after that moment, this
// node as the leader of its term. raft.VerifyLeader makes one by sending
// every follower a heartbeat at once and counting the answers. But an idle
// leader already sends every follower a heartbeat every tenth to fifth of
// HeartbeatTimeout: when a quorum has accepted heartbeats of the leader's
// term that were sent after the read came, that is the same proof, and it
// cost nothing extra. The argument needs no clocks across nodes, only the
// leader's own monotonic clock to order "the read came" before "the
// heartbeat was sent": a leader of a later term would have needed the
// votes of a majority before the read came, and at least one member of
// that majority accepted this node's heartbeat of an earlier term after
// it, which raft forbids (a server never goes back to an earlier term).
//
// The price is latency: a patient read waits for the next heartbeats, up
// to a fifth of HeartbeatTimeout plus a round trip, and falls back to a
// check of its own (VerifyLeader) if they have not confirmed it within
// patientBound. That suits reads nobody waits on, such as the read
// lease's periodic renewals of every node (BENCHMARKS.md, issue 14: each
// renewal's check sent a heartbeat to every follower, a third of what an
// idle leader sent).

// contactTransport wraps raft's transport to record, for each server, the
// send time and term of the latest append it accepted.
type contactTransport struct {
	raft.Transport
	c *contacts
}

// AppendEntries is raft.Transport's, recording an accepted append (a
// heartbeat, or an append raft did not pipeline).
func (t *contactTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	sent := time.Now()
	err := t.Transport.AppendEntries(id, target, args, resp)
	if err == nil && resp.Success && resp.Term == args.Term {
		t.c.accepted(id, args.Term, sent)
	}
	return err
}

// Close closes the wrapped transport if it can be closed (raft.WithClose).
func (t *contactTransport) Close() error {
	if c, ok := t.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

// contactTransportPV is contactTransport for a transport with pre-vote:
// raft asks the transport whether it has RequestPreVote, so the wrapper
// has it only when the wrapped transport does.
type contactTransportPV struct {
	*contactTransport
	pv raft.WithPreVote
}

// RequestPreVote is the wrapped transport's.
func (t *contactTransportPV) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.pv.RequestPreVote(id, target, args, resp)
}

var (
	_ raft.Transport   = (*contactTransport)(nil)
	_ raft.WithClose   = (*contactTransport)(nil)
	_ raft.WithPreVote = (*contactTransportPV)(nil)
)

// wrapTransport returns trans with its accepted appends recorded in c.
func wrapTransport(trans raft.Transport, c *contacts) raft.Transport {
	ct := &contactTransport{Transport: trans, c: c}
	if pv, ok := trans.(raft.WithPreVote); ok {
		return &contactTransportPV{contactTransport: ct, pv: pv}
	}
	return ct
}

// contactAt is when this node sent the latest append a server accepted,
// and that append's term.
type contactAt struct {
	term uint64
	sent time.Time
}

// contactWait is a read waiting for a quorum of appends sent after since,
// in term.
type contactWait struct {
	term  uint64
	since time.Time
	done  chan struct{}
}

// contacts is the record the transport keeps and patient reads wait on.
type contacts struct {
	self raft.ServerID

	mu sync.Mutex
	// config returns raft's latest configuration (set by start once raft
	// runs; until then no read waits).
	config  func() raft.Configuration
	last    map[raft.ServerID]contactAt
	waiters map[*contactWait]struct{}
	// confirmed counts the waits that appends confirmed (for tests and
	// benchmarks).
	confirmed uint64
}

func newContacts(self raft.ServerID) *contacts {
	return &contacts{self: self, last: map[raft.ServerID]contactAt{}, waiters: map[*contactWait]struct{}{}}
}

// accepted records that id accepted an append of term sent at sent, and
// releases the waits it completes. It runs on raft's replication
// goroutines, so it does little.
func (c *contacts) accepted(id raft.ServerID, term uint64, sent time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.last[id]; ok && (prev.term > term || prev.term == term && prev.sent.After(sent)) {
		return
	}
	c.last[id] = contactAt{term: term, sent: sent}
	if len(c.waiters) == 0 || c.config == nil {
		return
	}
	cfg := c.config()
	for w := range c.waiters {
		if c.quorumLocked(cfg, w) {
			delete(c.waiters, w)
			c.confirmed++
			close(w.done)
		}
	}
}

// quorumLocked reports whether a majority of cfg's voters accepted, in
// w.term, an append sent at or after w.since; this node counts for itself
// when it is a voter.
func (c *contacts) quorumLocked(cfg raft.Configuration, w *contactWait) bool {
	voters, acks := 0, 0
	for _, srv := range cfg.Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if srv.ID == c.self {
			acks++
			continue
		}
		if a, ok := c.last[srv.ID]; ok && a.term == w.term && !a.sent.Before(w.since) {
			acks++
		}
	}
	return voters > 0 && acks > voters/2
}

// wait registers a read that came at since in term. Its done channel
// closes when a quorum confirms it; call cancel if the read stops
// waiting first. A configuration in which this node alone is a quorum
// confirms at once.
func (c *contacts) wait(term uint64, since time.Time) *contactWait {
	w := &contactWait{term: term, since: since, done: make(chan struct{})}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.config != nil && c.quorumLocked(c.config(), w) {
		c.confirmed++
		close(w.done)
		return w
	}
	c.waiters[w] = struct{}{}
	return w
}

// cancel forgets w if it still waits.
func (c *contacts) cancel(w *contactWait) {
	c.mu.Lock()
	delete(c.waiters, w)
	c.mu.Unlock()
}

// start gives c raft's configuration.
func (c *contacts) start(config func() raft.Configuration) {
	c.mu.Lock()
	c.config = config
	c.mu.Unlock()
}

// confirmedCount is how many waits appends confirmed.
func (c *contacts) confirmedCount() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.confirmed
}
