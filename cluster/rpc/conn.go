package rpc

import (
	"fmt"
	"sync"

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
	retired bool // superseded: close once no call is pending
}

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
	drained := c.retired && len(c.pending) == 0
	c.mu.Unlock()
	if drained {
		c.wc.Close()
	}
}

// complete hands a response to its waiting call; a response nobody waits
// for (the caller gave up) is dropped.
func (c *conn) complete(f wire.Frame) {
	c.mu.Lock()
	ch := c.pending[f.ID]
	delete(c.pending, f.ID)
	drained := c.retired && len(c.pending) == 0
	c.mu.Unlock()
	if ch != nil {
		r := result{body: f.Body}
		if f.Kind == wire.KindError {
			r = result{err: &RemoteError{Peer: c.peer, Msg: string(f.Body)}}
		}
		ch <- r
	}
	if drained {
		c.wc.Close()
	}
}

// retire marks a connection superseded by its twin: it takes no new calls
// (it is no longer preferred) and closes when its last call completes.
func (c *conn) retire() {
	c.mu.Lock()
	c.retired = true
	idle := len(c.pending) == 0
	c.mu.Unlock()
	if idle {
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
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: fmt.Errorf("%w with %s", ErrConnLost, c.peer)}
	}
}
