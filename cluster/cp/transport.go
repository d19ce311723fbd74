package cp

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// NewTCPTransport is raft's TCP transport on bindAddr ("host:port", port 0
// picks one), advertising advertise if not empty. Unlike raft's own
// NewTCPTransport, closing it also closes the connections it accepted, so
// their reader goroutines end with it.
func NewTCPTransport(bindAddr, advertise string, logger *slog.Logger) (*raft.NetworkTransport, error) {
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, fmt.Errorf("cp: raft listen on %s: %w", bindAddr, err)
	}
	adv := ln.Addr()
	if advertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", advertise); err != nil {
			ln.Close()
			return nil, fmt.Errorf("cp: raft advertise address: %w", err)
		}
	} else if a := ln.Addr().(*net.TCPAddr); a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("cp: raft binds %s; give an address peers can reach to advertise", bindAddr)
	}
	stream := &streamLayer{ln: ln, adv: adv, conns: map[net.Conn]struct{}{}}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 10 * time.Second,
		Logger: newHCLogger(logger.With("component", "raft-transport")),
	}), nil
}

// streamLayer is a TCP raft.StreamLayer that owns its accepted connections.
type streamLayer struct {
	ln  net.Listener
	adv net.Addr

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

func (s *streamLayer) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	err := s.ln.Close()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (s *streamLayer) Addr() net.Addr { return s.adv }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(address), timeout)
}

type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

var _ io.Closer = (*trackedConn)(nil)
