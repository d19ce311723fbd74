package memnet

import (
	"fmt"
	"io"
	"sync"

	"github.com/shoal-dev/shoal/cluster/wire"
)

// cond wakes goroutines waiting for a change of state guarded by some
// mutex. Unlike sync.Cond it can be waited on in a select, next to a
// timer or a done channel. The zero value is ready; call both methods with
// the mutex held.
type cond struct{ ch chan struct{} }

// wait returns a channel that the next notify closes.
func (c *cond) wait() <-chan struct{} {
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *cond) notify() {
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// listener is a wire.Listener of the in-memory network.
type listener struct {
	n    *Network
	addr string

	mu      sync.Mutex
	pending []*conn // dialled, not yet accepted
	closed  bool
	changed cond
}

// push hands a new server end to Accept; false once the listener closed.
func (l *listener) push(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending = append(l.pending, c)
	l.changed.notify()
	return true
}

// Accept blocks until a connection arrives or the listener is closed
// (wire.ErrClosed).
func (l *listener) Accept() (wire.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.closed {
			return nil, wire.ErrClosed
		}
		if len(l.pending) > 0 {
			c := l.pending[0]
			l.pending = l.pending[1:]
			return c, nil
		}
		ch := l.changed.wait()
		l.mu.Unlock()
		<-ch
		l.mu.Lock()
	}
}

// Close stops accepting and closes connections not yet accepted; later
// dials to its address are refused. Safe to call twice.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	pending := l.pending
	l.pending = nil
	l.changed.notify()
	l.mu.Unlock()

	l.n.mu.Lock()
	if l.n.listeners[l.addr] == l {
		delete(l.n.listeners, l.addr)
	}
	l.n.mu.Unlock()
	for _, c := range pending {
		c.Close()
	}
	return nil
}

// Addr is "ip:port", with port 0 resolved.
func (l *listener) Addr() string { return l.addr }

// conn is one end of an in-memory frame connection. Frames sent on one
// end are routed through the network, where faults and partitions apply,
// into the other end's inbox, which is unbounded: Send never blocks and
// never returns wire.ErrBackpressure.
type conn struct {
	n                *Network
	local, remote    string // "ip:port"
	fromHost, toHost string
	peer             *conn
	link             *link
	order            order // of the frames sent from this end

	mu      sync.Mutex
	inbox   []wire.Frame
	closed  bool // Close was called on this end
	changed cond // the inbox grew or this end closed
}

// link is what both ends share: the connection is done when either end
// closes.
type link struct {
	once sync.Once
	done chan struct{}
}

func (l *link) cut() { l.once.Do(func() { close(l.done) }) }

func (l *link) isCut() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func newConnPair(n *Network, clientAddr, serverAddr string) (client, server *conn) {
	l := &link{done: make(chan struct{})}
	client = &conn{n: n, local: clientAddr, remote: serverAddr, link: l,
		fromHost: hostOf(clientAddr), toHost: hostOf(serverAddr)}
	server = &conn{n: n, local: serverAddr, remote: clientAddr, link: l,
		fromHost: hostOf(serverAddr), toHost: hostOf(clientAddr)}
	client.peer, server.peer = server, client
	return client, server
}

// Send copies f and routes the copy to the peer; it never blocks and does
// not keep f. It fails with wire.ErrClosed once either end closed, and
// refuses a frame the TCP network could not encode.
func (c *conn) Send(f *wire.Frame) error {
	if c.link.isCut() {
		return wire.ErrClosed
	}
	if err := checkFrame(f); err != nil {
		return err
	}
	cp := *f
	cp.Body = cloneBody(f.Body)
	tr := Traffic{From: c.fromHost, To: c.toHost, Kind: Frame, Frame: &cp}
	c.n.routeFrame(&c.order, tr, func(clone bool) bool {
		g := cp
		if clone { // the receiver owns Body; duplicates must not share it
			g.Body = cloneBody(cp.Body)
		}
		return c.peer.deliver(g)
	})
	return nil
}

// checkFrame refuses what the TCP network refuses, so that a test cannot
// pass on memnet with frames production would reject: a frame above the
// default size limit, of an unknown kind, or with an overlong type.
func checkFrame(f *wire.Frame) error {
	const lengthPrefix = 4
	if size := wire.EncodedLen(f) - lengthPrefix; size > wire.DefaultMaxFrameSize {
		return fmt.Errorf("memnet: frame of %d bytes: %w", size, wire.ErrFrameTooLarge)
	}
	// Encoding the frame without its body checks kind and type cheaply.
	_, err := wire.AppendFrame(nil, &wire.Frame{Kind: f.Kind, Type: f.Type}, wire.DefaultMaxFrameSize)
	return err
}

// cloneBody copies b; an empty body becomes nil, as wire's decoder makes it.
func cloneBody(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// deliver queues f for Recv; false once the connection is done.
func (c *conn) deliver(f wire.Frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.link.isCut() {
		return false
	}
	c.inbox = append(c.inbox, f)
	c.changed.notify()
	return true
}

// Recv blocks for the next frame. It returns wire.ErrClosed once this end
// is closed; once the peer has closed, it returns the frames already
// delivered and then io.EOF. Frames still delayed in the network when
// either end closes are lost.
func (c *conn) Recv() (wire.Frame, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return wire.Frame{}, wire.ErrClosed
		case len(c.inbox) > 0:
			f := c.inbox[0]
			c.inbox[0] = wire.Frame{} // let the body be collected
			c.inbox = c.inbox[1:]
			return f, nil
		case c.link.isCut():
			return wire.Frame{}, io.EOF
		}
		ch := c.changed.wait()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.link.done:
		}
		c.mu.Lock()
	}
}

// Close closes this end and with it the connection: Done closes, a
// blocked Recv returns, queued frames are discarded. Safe to call twice
// and concurrently.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.inbox = nil
	c.changed.notify()
	c.mu.Unlock()

	c.link.cut()
	c.n.mu.Lock()
	delete(c.n.conns, c)
	c.n.mu.Unlock()
	return nil
}

// Done is closed when either end closes.
func (c *conn) Done() <-chan struct{} { return c.link.done }

// RemoteAddr is the peer's "ip:port".
func (c *conn) RemoteAddr() string { return c.remote }
