package rpc

import (
	"fmt"
	"sync"
	"sync/atomic"
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

	mu      sync.Mutex
	pending map[uint64]chan result
	dead    bool
	retired bool // superseded by its twin: takes no new traffic
	// drained is set once a retired connection has received nothing for
	// retireGrace: the frames its peer sent before switching to the twin
	// have arrived, and it closes once no call is pending.
	drained bool

	// reads counts the frames received, so that a retired connection is
	// closed only after its peer has stopped sending on it.
	reads atomic.Uint64
}

// retireGrace is how long a superseded connection must stay silent before
// it closes, so that the one-way frames already sent on it arrive: a
// one-way frame has no reply to wait for, and closing while the peer's
// frames are still queued (a 64-node cluster dialling all its pairs at
// once, or a loaded machine) would lose them. The peer sends nothing on it
// once it has switched to the twin.
const retireGrace = time.Second

func newConn(n *Node, wc wire.Conn, dialed bool) *conn {
	return &conn{n: n, wc: wc, dialedBySelf: dialed, pending: map[uint64]chan result{}}
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
	idle := c.drained && len(c.pending) == 0
	c.mu.Unlock()
	if idle {
		c.wc.Close()
	}
}

// complete hands a response to its waiting call; a response nobody waits
// for (the caller gave up) is dropped.
func (c *conn) complete(f wire.Frame) {
	c.mu.Lock()
	ch := c.pending[f.ID]
	delete(c.pending, f.ID)
	idle := c.drained && len(c.pending) == 0
	c.mu.Unlock()
	if ch != nil {
		r := result{body: f.Body}
		if f.Kind == wire.KindError {
			r = result{err: &RemoteError{Peer: c.peer, Msg: string(f.Body)}}
		}
		ch <- r
	}
	if idle {
		c.wc.Close()
	}
}

// retire marks a connection superseded by its twin: it takes no new
// traffic (it is no longer preferred) and, after retireGrace, closes once
// its last call has completed.
func (c *conn) retire() {
	c.mu.Lock()
	c.retired = true
	c.mu.Unlock()
	c.drainAfterSilence(c.reads.Load())
}

// drainAfterSilence marks the connection drained once it has received no
// frame for retireGrace since it had received seen frames.
func (c *conn) drainAfterSilence(seen uint64) {
	time.AfterFunc(retireGrace, func() {
		if now := c.reads.Load(); now != seen {
			c.drainAfterSilence(now) // the peer's frames are still arriving
			return
		}
		c.mu.Lock()
		c.drained = true
		idle := len(c.pending) == 0
		c.mu.Unlock()
		if idle {
			c.wc.Close()
		}
	})
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
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: fmt.Errorf("%w with %s", ErrConnLost, c.peer)}
	}
}
