package memnet

import (
	"io"
	"sync"

	"github.com/shoal-dev/shoal/cluster/wire"
)

// listener is a wire.Listener of the in-memory network.
type listener struct {
	n    *Network
	addr string
	wake chan struct{}
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	pending []*conn
	closed  bool
}

// push hands a new server-side connection to Accept; false once closed.
func (l *listener) push(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending = append(l.pending, c)
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

func (l *listener) Accept() (wire.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, wire.ErrClosed
		}
		if len(l.pending) > 0 {
			c := l.pending[0]
			l.pending = l.pending[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-l.done:
		}
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		pending := l.pending
		l.pending = nil
		l.mu.Unlock()
		close(l.done)
		l.n.mu.Lock()
		if l.n.listeners[l.addr] == l {
			delete(l.n.listeners, l.addr)
		}
		l.n.mu.Unlock()
		for _, c := range pending {
			c.Close()
		}
	})
	return nil
}

func (l *listener) Addr() string { return l.addr }

// conn is one end of an in-memory frame connection. Frames sent on one end
// are routed through the network (where faults apply) into the other
// end's inbox.
type conn struct {
	n            *Network
	local, other string // addresses
	peer         *conn
	shared       *connShared
	wake         chan struct{}

	mu     sync.Mutex
	inbox  []wire.Frame
	closed bool // this end closed
}

// connShared is what both ends share: the connection is done when either
// end closes.
type connShared struct {
	once sync.Once
	done chan struct{}
}

func newConnPair(n *Network, clientAddr, serverAddr string) (client, server *conn) {
	sh := &connShared{done: make(chan struct{})}
	client = &conn{n: n, local: clientAddr, other: serverAddr, shared: sh, wake: make(chan struct{}, 1)}
	server = &conn{n: n, local: serverAddr, other: clientAddr, shared: sh, wake: make(chan struct{}, 1)}
	client.peer, server.peer = server, client
	return client, server
}

func (c *conn) Send(f *wire.Frame) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return wire.ErrClosed
	}
	select {
	case <-c.shared.done:
		return wire.ErrClosed
	default:
	}
	cp := *f
	cp.Body = append([]byte(nil), f.Body...)
	if len(f.Body) == 0 {
		cp.Body = nil
	}
	c.n.route(Traffic{From: hostOf(c.local), To: hostOf(c.other), Kind: Frame, Frame: &cp}, func() {
		c.peer.deliver(cp)
	})
	return nil
}

func (c *conn) deliver(f wire.Frame) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.inbox = append(c.inbox, f)
	c.mu.Unlock()
	c.signal()
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Recv returns queued frames first; then wire.ErrClosed if this end was
// closed, or io.EOF if the other end was.
func (c *conn) Recv() (wire.Frame, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return wire.Frame{}, wire.ErrClosed
		case len(c.inbox) > 0:
			f := c.inbox[0]
			c.inbox = c.inbox[1:]
			c.mu.Unlock()
			return f, nil
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-c.shared.done:
			c.mu.Lock()
			empty, closed := len(c.inbox) == 0, c.closed
			c.mu.Unlock()
			if closed {
				return wire.Frame{}, wire.ErrClosed
			}
			if empty {
				return wire.Frame{}, io.EOF
			}
		}
	}
}

func (c *conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.inbox = nil
	c.mu.Unlock()
	c.shared.once.Do(func() { close(c.shared.done) })
	c.signal()
	c.peer.signal()
	return nil
}

func (c *conn) Done() <-chan struct{} { return c.shared.done }
func (c *conn) RemoteAddr() string    { return c.other }
