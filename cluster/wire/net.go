package wire

import (
	"context"
	"errors"
	"net"
)

// Conn is a bidirectional stream of frames between two nodes.
//
// Send may be called from many goroutines at once; Recv from one. Close is
// safe to call more than once and from any goroutine; it makes a blocked
// Recv return.
type Conn interface {
	// Send queues f for writing and returns without waiting for the bytes
	// to leave. The frame is written in order with the other frames sent on
	// this Conn. The caller must not modify f.Body afterwards. Send fails
	// with ErrClosed once the Conn is closed, and with ErrBackpressure when
	// too much is queued for a peer that does not read.
	Send(f *Frame) error
	// Recv blocks until the next frame arrives. A malformed or oversized
	// frame is returned as an error, after which the Conn is unusable.
	Recv() (Frame, error)
	// Close closes the connection; queued frames may be lost.
	Close() error
	// Done is closed when the connection is closed, by either side.
	Done() <-chan struct{}
	// RemoteAddr is the peer's address, for logs.
	RemoteAddr() string
}

// Listener accepts frame connections.
type Listener interface {
	// Accept blocks for the next connection; it fails with ErrClosed once
	// the Listener is closed.
	Accept() (Conn, error)
	// Close stops accepting; it is safe to call twice.
	Close() error
	// Addr is the address peers dial, with any port 0 resolved.
	Addr() string
}

// Network creates frame connections: TCP in production, an in-memory
// network (package memnet) in tests.
type Network interface {
	Listen(addr string) (Listener, error)
	Dial(ctx context.Context, addr string) (Conn, error)
}

var (
	// ErrClosed is returned by operations on a closed Conn or Listener.
	ErrClosed = errors.New("wire: connection closed")
	// ErrBackpressure is returned by Send when the peer is not reading and
	// the queue limit has been reached.
	ErrBackpressure = errors.New("wire: send queue full")
)

// IsClosedError reports whether err means the connection or listener was
// closed, rather than a fault worth logging.
func IsClosedError(err error) bool {
	return errors.Is(err, ErrClosed) || errors.Is(err, net.ErrClosed)
}
