package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TCP is the production Network: frames over TCP with write coalescing.
//
// When nothing is being written, Send writes its frame to the socket itself
// (one syscall, no goroutine hand-off). Otherwise it appends the frame to
// a queue and wakes the Conn's writer goroutine, which takes everything
// queued at once, encodes it into one buffer and writes it with a single
// syscall: under load many frames share a write, and when idle a frame
// leaves at once, so coalescing adds no latency. A direct write that the
// socket does not take within a few milliseconds (a peer that does not
// read) hands what is left to the writer, so Send does not block longer.
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
	return t.newConn(c), nil
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
	return l.t.newConn(c), nil
}

func (l *tcpListener) Close() error {
	if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func (l *tcpListener) Addr() string { return l.ln.Addr().String() }

type tcpConn struct {
	t    *TCP
	c    net.Conn
	r    *bufio.Reader
	max  int
	done chan struct{}
	once sync.Once
	wake chan struct{}
	// writerDone is closed when the writer goroutine has returned.
	writerDone chan struct{}

	mu     sync.Mutex
	queue  []*Frame
	queued int // bytes in queue
	closed bool
	// writing: the socket's write side is taken, by the writer goroutine
	// or by a Send writing its frame directly. Its holder alone uses wbuf.
	writing bool
	// leftover is the unwritten tail of a direct write that timed out;
	// the writer sends it before anything queued.
	leftover []byte
	wbuf     []byte
}

// directTimeout bounds a direct write from Send; what the socket has not
// taken by then is left to the writer goroutine.
const directTimeout = 5 * time.Millisecond

func (t *TCP) newConn(c net.Conn) *tcpConn {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true) // we coalesce ourselves
	}
	tc := &tcpConn{
		t: t, c: c, r: bufio.NewReaderSize(c, 64<<10), max: t.maxFrame(),
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
	if !c.writing && len(c.queue) == 0 && c.leftover == nil {
		c.writing = true
		c.mu.Unlock()
		return c.writeDirect(f)
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

// writeDirect writes f from the calling goroutine, which holds c.writing.
func (c *tcpConn) writeDirect(f *Frame) error {
	buf, err := AppendFrame(c.wbuf[:0], f, c.max)
	if err != nil {
		c.release(buf[:0])
		return err
	}
	_ = c.c.SetWriteDeadline(time.Now().Add(directTimeout))
	n, err := c.c.Write(buf)
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			c.release(nil)
			c.fail(err)
			return fmt.Errorf("wire: write: %w", err)
		}
		// The peer is slow to read: the writer finishes the frame (its
		// deadline is WriteTimeout) and Send returns, the frame queued.
		c.mu.Lock()
		c.leftover = append([]byte(nil), buf[n:]...)
		c.mu.Unlock()
	}
	c.count(1, n)
	c.release(buf[:0])
	return nil
}

// release gives up the write side, keeping buf for the next writer, and
// wakes the writer goroutine if frames were queued meanwhile.
func (c *tcpConn) release(buf []byte) {
	if cap(buf) > 1<<20 {
		buf = nil // do not pin a large buffer after a burst
	}
	c.mu.Lock()
	c.writing, c.wbuf = false, buf
	more := len(c.queue) > 0 || c.leftover != nil
	c.mu.Unlock()
	if more {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

func (c *tcpConn) count(frames, bytes int) {
	if s := c.t.Stats; s != nil {
		s.Writes.Add(1)
		s.FramesOut.Add(uint64(frames))
		s.BytesOut.Add(uint64(bytes))
	}
}

func (c *tcpConn) writeLoop() {
	defer close(c.writerDone)
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
		for {
			c.mu.Lock()
			if c.writing || len(c.queue) == 0 && c.leftover == nil {
				// Nothing to do, or a Send is writing: it wakes this
				// goroutine again if it leaves frames queued.
				c.mu.Unlock()
				break
			}
			c.writing = true
			batch, c.queue = c.queue, batch[:0]
			c.queued = 0
			buf := append(c.wbuf[:0], c.leftover...)
			c.leftover = nil
			c.mu.Unlock()
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
			c.count(len(batch), len(buf))
			if cap(buf) > 1<<20 {
				buf = nil
			}
			c.mu.Lock()
			c.writing, c.wbuf = false, buf[:0]
			c.mu.Unlock()
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
		_ = c.c.Close()
	})
}

// Close closes the socket and waits for the writer goroutine to return.
func (c *tcpConn) Close() error {
	c.shut()
	<-c.writerDone
	return nil
}

var _ io.Closer = (*tcpConn)(nil)
