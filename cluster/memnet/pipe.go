package memnet

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeConn is one end of a buffered, bidirectional in-memory stream with
// deadlines: writes never block (unlike net.Pipe, which would deadlock
// memberlist's push/pull, where both sides write before reading).
type pipeConn struct {
	local, remote net.Addr
	in, out       *buffer
}

func newPipe(a, b net.Addr) (*pipeConn, *pipeConn) {
	ab, ba := newBuffer(), newBuffer()
	return &pipeConn{local: a, remote: b, in: ba, out: ab}, &pipeConn{local: b, remote: a, in: ab, out: ba}
}

func (c *pipeConn) Read(p []byte) (int, error)  { return c.in.read(p) }
func (c *pipeConn) Write(p []byte) (int, error) { return c.out.write(p) }
func (c *pipeConn) LocalAddr() net.Addr         { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr        { return c.remote }

// Close ends both directions: the other end reads what was buffered, then
// io.EOF; this end's reads and writes fail.
func (c *pipeConn) Close() error {
	c.in.close()
	c.out.close()
	return nil
}

func (c *pipeConn) SetDeadline(t time.Time) error {
	c.in.setDeadline(t)
	c.out.setDeadline(t)
	return nil
}
func (c *pipeConn) SetReadDeadline(t time.Time) error  { c.in.setDeadline(t); return nil }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { c.out.setDeadline(t); return nil }

// buffer is one direction of a pipe. changed is closed and replaced on
// every state change, waking blocked readers.
type buffer struct {
	mu       sync.Mutex
	data     []byte
	closed   bool
	deadline time.Time
	changed  chan struct{}
}

func newBuffer() *buffer { return &buffer{changed: make(chan struct{})} }

func (b *buffer) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *buffer) read(p []byte) (int, error) {
	for {
		b.mu.Lock()
		switch {
		case len(b.data) > 0:
			n := copy(p, b.data)
			b.data = b.data[n:]
			b.mu.Unlock()
			return n, nil
		case b.closed:
			b.mu.Unlock()
			return 0, io.EOF
		case !b.deadline.IsZero() && !time.Now().Before(b.deadline):
			b.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		ch, dl := b.changed, b.deadline
		b.mu.Unlock()
		if dl.IsZero() {
			<-ch
			continue
		}
		t := time.NewTimer(time.Until(dl))
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

func (b *buffer) write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, io.ErrClosedPipe
	case !b.deadline.IsZero() && !time.Now().Before(b.deadline):
		return 0, os.ErrDeadlineExceeded
	}
	b.data = append(b.data, p...)
	b.notifyLocked()
	return len(p), nil
}

func (b *buffer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.notifyLocked()
	}
}

func (b *buffer) setDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deadline = t
	b.notifyLocked()
}
