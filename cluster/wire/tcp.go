package wire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// TCP is the production Network: frames over TCP with write coalescing.
//
// Each Conn has one writer goroutine. Send appends to a queue and wakes it;
// the writer takes everything queued at once, encodes it into one buffer and
// writes it with a single syscall. Woken, the writer first yields the
// processor once (runtime.Gosched), so that the goroutines made runnable by
// the same event — the callers a batch of responses has just released, the
// handlers of a batch of requests — queue their frames before it takes the
// batch: a write syscall on loopback costs several microseconds, and under
// load this turns 1.3 frames per write into 15–20 (BENCHMARKS.md, Hot
// paths). When nothing else is runnable the yield returns at once, so a lone
// frame is written as soon as it is queued. The price is paid when the
// process's own goroutines keep both cores busy: the writer then waits its
// turn on the scheduler's global run queue instead of running next, as a
// woken goroutine does.
type TCP struct {
	// MaxFrameSize bounds frames in both directions (DefaultMaxFrameSize if 0).
	MaxFrameSize int
	// MaxQueuedBytes bounds what Send may queue for one connection before it
	// returns ErrBackpressure (64 MiB if 0).
	MaxQueuedBytes int
	// WriteTimeout bounds one write to the socket; a peer that does not
	// read for this long is disconnected (10 s if 0).
	WriteTimeout time.Duration
	// Stats, if set, counts the traffic of every Conn of this Network.
	Stats *Stats
	// TLS, if set, runs every connection over TLS: Dial completes the
	// client's handshake before it returns; an accepted connection's
	// handshake is completed by Handshake (or by its first read or
	// write), so that a slow client does not hold up Accept.
	TLS *TLS
}

// TLS holds the TLS configurations of a TCP network.
type TLS struct {
	// Server is used for accepted connections, Client for dialed ones.
	Server, Client *tls.Config
}

// Handshake completes the TLS handshake of c, if it runs over TLS, until
// ctx ends, and returns the connection's TLS state; secured is false for
// a connection without TLS (plaintext TCP, or another Network's).
func Handshake(ctx context.Context, c Conn) (state tls.ConnectionState, secured bool, err error) {
	tc, ok := c.(*tcpConn)
	if !ok || tc.tls == nil {
		return tls.ConnectionState{}, false, nil
	}
	if err := tc.tls.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, true, err
	}
	return tc.tls.ConnectionState(), true, nil
}

// Stats counts frame traffic. Its fields are updated atomically; read them
// with Snapshot.
type Stats struct {
	FramesOut, FramesIn atomic.Uint64
	BytesOut, BytesIn   atomic.Uint64
	// Writes counts write syscalls: FramesOut/Writes is the coalescing factor.
	Writes atomic.Uint64
}

// StatsSnapshot is a point-in-time copy of Stats.
type StatsSnapshot struct {
	FramesOut, FramesIn, BytesOut, BytesIn, Writes uint64
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		FramesOut: s.FramesOut.Load(), FramesIn: s.FramesIn.Load(),
		BytesOut: s.BytesOut.Load(), BytesIn: s.BytesIn.Load(), Writes: s.Writes.Load(),
	}
}

func (t *TCP) maxFrame() int {
	if t.MaxFrameSize > 0 {
		return t.MaxFrameSize
	}
	return DefaultMaxFrameSize
}

// Listen listens on a TCP address such as "127.0.0.1:0".
func (t *TCP) Listen(addr string) (Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &tcpListener{t: t, ln: ln}, nil
}

// Dial connects to addr, giving up when ctx ends.
func (t *TCP) Dial(ctx context.Context, addr string) (Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if t.TLS == nil {
		return t.newConn(c, nil), nil
	}
	tc := tls.Client(c, t.TLS.Client)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	return t.newConn(c, tc), nil
}

type tcpListener struct {
	t  *TCP
	ln net.Listener
}

func (l *tcpListener) Accept() (Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return nil, ErrClosed
		}
		return nil, err
	}
	if l.t.TLS == nil {
		return l.t.newConn(c, nil), nil
	}
	return l.t.newConn(c, tls.Server(c, l.t.TLS.Server)), nil
}

func (l *tcpListener) Close() error {
	if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func (l *tcpListener) Addr() string { return l.ln.Addr().String() }

type tcpConn struct {
	t *TCP
	// c is what frames are read from and written to: the TCP connection,
	// or tls over it; raw is the TCP connection.
	c, raw net.Conn
	tls    *tls.Conn // nil without TLS
	r      *bufio.Reader
	max    int
	done   chan struct{}
	once   sync.Once
	wake   chan struct{}
	// writerDone is closed when the writer goroutine has returned.
	writerDone chan struct{}

	mu     sync.Mutex
	queue  []*Frame
	queued int // bytes in queue
	closed bool
}

// newConn wraps a TCP connection, and the TLS connection over it if
// there is one.
func (t *TCP) newConn(raw net.Conn, secured *tls.Conn) *tcpConn {
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true) // we coalesce ourselves
	}
	var c net.Conn = raw
	if secured != nil {
		c = secured
	}
	tc := &tcpConn{
		t: t, c: c, raw: raw, tls: secured, r: bufio.NewReaderSize(c, 64<<10), max: t.maxFrame(),
		done: make(chan struct{}), wake: make(chan struct{}, 1), writerDone: make(chan struct{}),
	}
	go tc.writeLoop()
	return tc
}

func (c *tcpConn) RemoteAddr() string    { return c.c.RemoteAddr().String() }
func (c *tcpConn) Done() <-chan struct{} { return c.done }

func (c *tcpConn) Send(f *Frame) error {
	n := EncodedLen(f)
	if n-headerLen > c.max {
		return &tooLargeError{n: n - headerLen, max: c.max}
	}
	limit := c.t.MaxQueuedBytes
	if limit <= 0 {
		limit = 64 << 20
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.queued+n > limit && len(c.queue) > 0 {
		c.mu.Unlock()
		return ErrBackpressure
	}
	c.queue = append(c.queue, f)
	c.queued += n
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

func (c *tcpConn) writeLoop() {
	defer close(c.writerDone)
	var buf []byte
	var batch []*Frame
	timeout := c.t.WriteTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		// Let the goroutines woken with the sender queue their frames
		// first (see TCP).
		runtime.Gosched()
		c.mu.Lock()
		batch, c.queue = c.queue, batch[:0]
		c.queued = 0
		c.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		buf = buf[:0]
		for i, f := range batch {
			var err error
			if buf, err = AppendFrame(buf, f, c.max); err != nil {
				c.fail(fmt.Errorf("wire: encoding frame: %w", err))
				return
			}
			batch[i] = nil
		}
		_ = c.c.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := c.c.Write(buf); err != nil {
			c.fail(err)
			return
		}
		if s := c.t.Stats; s != nil {
			s.Writes.Add(1)
			s.FramesOut.Add(uint64(len(batch)))
			s.BytesOut.Add(uint64(len(buf)))
		}
		if cap(buf) > 1<<20 {
			buf = nil // do not pin a large buffer after a burst
		}
	}
}

func (c *tcpConn) fail(error) { c.shut() }

func (c *tcpConn) Recv() (Frame, error) {
	f, err := ReadFrame(c.r, c.max)
	if err != nil {
		select {
		case <-c.done:
			return Frame{}, ErrClosed
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			err = ErrClosed
		}
		c.shut()
		return Frame{}, err
	}
	if s := c.t.Stats; s != nil {
		s.FramesIn.Add(1)
		s.BytesIn.Add(uint64(EncodedLen(&f)))
	}
	return f, nil
}

func (c *tcpConn) shut() {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.queue = nil
		c.mu.Unlock()
		close(c.done)
		// The TCP connection, not TLS's Close: that would first send a
		// close_notify alert, which can wait up to 5 s for a peer that
		// does not read. The peer reads the end of the stream as EOF.
		_ = c.raw.Close()
	})
}

// Close closes the socket and waits for the writer goroutine to return.
func (c *tcpConn) Close() error {
	c.shut()
	<-c.writerDone
	return nil
}

var _ io.Closer = (*tcpConn)(nil)
