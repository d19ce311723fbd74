package rpc

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
)

type result struct {
	body []byte
	err  error
}

// conn is one peer connection and the calls waiting on it.
type conn struct {
	n            *Node
	wc           wire.Conn
	peer         string
	dialedBySelf bool

	// sendMu orders new traffic against the end of the retirement
	// handshake: senders hold it shared around Send and check stopped, the
	// handshake's markers are sent holding it exclusively, so nothing new
	// follows a marker on the connection.
	sendMu  sync.RWMutex
	stopped bool // a marker was sent: no new requests or one-way frames

	mu      sync.Mutex
	pending map[uint64]chan result
	serving int // the peer's requests served on goroutines, not yet answered
	dead    bool
	// retired: superseded by its twin, takes no new traffic. A retired
	// connection is closed by the retirement handshake (retire).
	retired bool
	// peerRetired: the peer sent retireMsg; ackSent: this side answered
	// it with retiredMsg.
	peerRetired, ackSent bool
	retireTimer          *time.Timer
}

// The retirement handshake, in one-way frames of reserved types that the
// node handles itself. The dialer of the connection that lost to its twin
// sends retireMsg on it after its last new frame; the other side, once it
// has read it and has no call of its own waiting on the connection and
// none of the peer's in service, stops sending new traffic on it and
// answers retiredMsg; the dialer, reading that, has had every frame the
// other side sent on it, and the other side every frame it sent, so it
// closes the connection and the other side sees it end.
const (
	retireMsg  = "\x00rpc.retire"
	retiredMsg = "\x00rpc.retired"
)

// retireTimeout bounds the handshake for a peer that never answers it (a
// version without it): the connection is closed then regardless.
const retireTimeout = time.Minute

// errStopped: the connection takes no new traffic (it is being retired);
// the caller picks the peer's current connection instead. Nothing was sent.
var errStopped = errors.New("rpc: connection retired")

func newConn(n *Node, wc wire.Conn, dialed bool) *conn {
	return &conn{n: n, wc: wc, dialedBySelf: dialed, pending: map[uint64]chan result{}}
}

// send sends new traffic (a request or a one-way frame): errStopped once
// a retirement marker went out on the connection.
func (c *conn) send(f *wire.Frame) error {
	c.sendMu.RLock()
	defer c.sendMu.RUnlock()
	if c.stopped {
		return errStopped
	}
	return c.wc.Send(f)
}

// sendMarker stops new traffic and sends a retirement marker after it.
func (c *conn) sendMarker(typ string) {
	c.sendMu.Lock()
	c.stopped = true
	err := c.wc.Send(&wire.Frame{Kind: wire.KindOneway, Type: typ})
	c.sendMu.Unlock()
	if err != nil && !wire.IsClosedError(err) {
		c.n.log.Debug("rpc: could not send a retirement marker", "peer", c.peer, "err", err)
	}
}

func (c *conn) addPending(id uint64, ch chan result) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return false
	}
	c.pending[id] = ch
	return true
}

func (c *conn) removePending(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
	c.maybeAck()
}

// complete hands a response to its waiting call; a response nobody waits
// for (the caller gave up) is dropped.
func (c *conn) complete(f wire.Frame) {
	c.mu.Lock()
	ch := c.pending[f.ID]
	delete(c.pending, f.ID)
	c.mu.Unlock()
	if ch != nil {
		r := result{body: f.Body}
		if f.Kind == wire.KindError {
			r = result{err: &RemoteError{Peer: c.peer, Msg: string(f.Body)}}
		}
		ch <- r
	}
	c.maybeAck()
}

// startServing and doneServing count the peer's requests in service on
// their own goroutines: their responses must leave before retiredMsg.
func (c *conn) startServing() {
	c.mu.Lock()
	c.serving++
	c.mu.Unlock()
}

func (c *conn) doneServing() {
	c.mu.Lock()
	c.serving--
	c.mu.Unlock()
	c.maybeAck()
}

// retire marks a connection superseded by its twin (it is no longer
// preferred and takes no new traffic) and starts the handshake that
// closes it once both sides have stopped using it. The caller holds n.mu.
func (c *conn) retire() {
	c.mu.Lock()
	if c.retired || c.dead {
		c.mu.Unlock()
		return
	}
	c.retired = true
	c.retireTimer = time.AfterFunc(retireTimeout, func() { c.wc.Close() })
	c.mu.Unlock()
	c.n.log.Debug("rpc: retiring a connection that lost to its twin", "peer", c.peer, "remote", c.wc.RemoteAddr())
	c.sendMarker(retireMsg)
}

// onRetire handles the peer's retireMsg: the connection takes no new
// traffic from this side either, and is answered once idle.
func (c *conn) onRetire() {
	n := c.n
	n.mu.Lock()
	c.mu.Lock()
	c.retired, c.peerRetired = true, true
	c.mu.Unlock()
	if p := n.peers[c.peer]; p != nil && p.conn == c {
		p.conn = n.otherConnLocked(c)
	}
	n.mu.Unlock()
	c.maybeAck()
}

// maybeAck answers retireMsg once no call of this side waits on the
// connection and no request of the peer is in service.
func (c *conn) maybeAck() {
	c.mu.Lock()
	ready := c.peerRetired && !c.ackSent && len(c.pending) == 0 && c.serving == 0
	if ready {
		c.ackSent = true
	}
	c.mu.Unlock()
	if ready {
		c.n.log.Debug("rpc: peer retired a connection; acknowledging", "peer", c.peer, "remote", c.wc.RemoteAddr())
		c.sendMarker(retiredMsg)
	}
}

// onRetired handles the peer's retiredMsg: everything either side sent on
// the connection has arrived, so it closes.
func (c *conn) onRetired() {
	c.mu.Lock()
	retired := c.retired && !c.peerRetired
	c.mu.Unlock()
	if retired {
		c.n.log.Debug("rpc: retired connection closed", "peer", c.peer, "remote", c.wc.RemoteAddr())
		c.wc.Close()
	}
}

func (c *conn) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

func (c *conn) isRetired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retired
}

func (c *conn) failAll() {
	c.mu.Lock()
	c.dead = true
	pending := c.pending
	c.pending = map[uint64]chan result{}
	if c.retireTimer != nil {
		c.retireTimer.Stop()
	}
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: fmt.Errorf("%w with %s", ErrConnLost, c.peer)}
	}
}
