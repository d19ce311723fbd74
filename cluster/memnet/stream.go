package memnet

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// stream is one end of a memberlist stream: a net.Conn over two in-memory
// byte buffers, one per direction. Unlike net.Pipe, writes are buffered
// and never block, since memberlist's push/pull has both sides write
// before either reads and would deadlock on a synchronous pipe.
//
// As with TCP, once an end closes its peer reads what was buffered and
// then io.EOF, and writes to the closed end fail; deadlines expire with
// os.ErrDeadlineExceeded, a net.Error whose Timeout is true.
type stream struct {
	local, remote net.Addr
	in, out       *buffer
}

var _ net.Conn = (*stream)(nil)

func newStreamPair(a, b net.Addr) (*stream, *stream) {
	ab, ba := &buffer{}, &buffer{}
	return &stream{local: a, remote: b, in: ba, out: ab},
		&stream{local: b, remote: a, in: ab, out: ba}
}

func (s *stream) Read(p []byte) (int, error)  { return s.in.read(p) }
func (s *stream) Write(p []byte) (int, error) { return s.out.write(p) }
func (s *stream) LocalAddr() net.Addr         { return s.local }
func (s *stream) RemoteAddr() net.Addr        { return s.remote }

// Close ends both directions. Safe to call twice.
func (s *stream) Close() error {
	s.in.closeReader()
	s.out.closeWriter()
	return nil
}

func (s *stream) SetDeadline(t time.Time) error {
	s.in.setReadDeadline(t)
	s.out.setWriteDeadline(t)
	return nil
}

func (s *stream) SetReadDeadline(t time.Time) error {
	s.in.setReadDeadline(t)
	return nil
}

func (s *stream) SetWriteDeadline(t time.Time) error {
	s.out.setWriteDeadline(t)
	return nil
}

// buffer is one direction of a stream: one end writes it, the other
// reads it. Each end sets its own deadline on it, so neither end's
// deadline affects the other.
type buffer struct {
	mu            sync.Mutex
	data          []byte
	readerClosed  bool
	writerClosed  bool
	readDeadline  time.Time // set by the reading end
	writeDeadline time.Time // set by the writing end
	changed       cond      // data, closing or the read deadline changed
}

func (b *buffer) read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		switch {
		case b.readerClosed:
			return 0, net.ErrClosed
		case len(b.data) > 0:
			n := copy(p, b.data)
			b.data = b.data[n:]
			if len(b.data) == 0 {
				b.data = nil // release the drained array
			}
			return n, nil
		case b.writerClosed:
			return 0, io.EOF
		case expired(b.readDeadline):
			return 0, os.ErrDeadlineExceeded
		case len(p) == 0:
			return 0, nil
		}
		ch, deadline := b.changed.wait(), b.readDeadline
		b.mu.Unlock()
		waitUntil(ch, deadline)
		b.mu.Lock()
	}
}

// waitUntil waits for ch to close or the deadline (zero: none) to pass.
func waitUntil(ch <-chan struct{}, deadline time.Time) {
	if deadline.IsZero() {
		<-ch
		return
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

func expired(deadline time.Time) bool {
	return !deadline.IsZero() && !time.Now().Before(deadline)
}

func (b *buffer) write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.writerClosed:
		return 0, net.ErrClosed
	case b.readerClosed:
		return 0, io.ErrClosedPipe
	case expired(b.writeDeadline):
		return 0, os.ErrDeadlineExceeded
	}
	b.data = append(b.data, p...)
	b.changed.notify()
	return len(p), nil
}

// closeReader discards what is buffered: nobody will read it.
func (b *buffer) closeReader() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.readerClosed = true
	b.data = nil
	b.changed.notify()
}

func (b *buffer) closeWriter() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writerClosed = true
	b.changed.notify()
}

func (b *buffer) setReadDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.readDeadline = t
	b.changed.notify() // a blocked read must see the new deadline
}

func (b *buffer) setWriteDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writeDeadline = t
}
