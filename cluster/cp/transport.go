package cp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// TransportConfig configures NewTransport.
type TransportConfig struct {
	// Bind is the address raft listens on ("host:port", port 0 picks
	// one); Advertise, if set, the one peers dial.
	Bind, Advertise string
	// TLS, if set, runs raft over mutual TLS 1.3 with the node's
	// certificates: an accepted connection must present a certificate of
	// the CA for a node that Admit admits, every request on it must name
	// that node as its sender (raft's server ID), and a dialed peer must
	// present a certificate of the CA for the server raft meant to dial.
	TLS *tlsutil.Reloader
	// Admit decides whether the node named in a connection's certificate
	// may speak raft to this node (a member of the cluster); it may wait
	// until ctx ends for the answer to become yes. Nil admits every node
	// with a certificate. Used only with TLS.
	Admit func(ctx context.Context, name string) error
	// Refused, if set, is told of each refused connection or request:
	// the reason (tlsutil's Reason constants), the peer's address, its
	// name if known, and the error. Nil: refusals are logged at Warn.
	Refused func(reason, remote, name string, err error)
	// Logger receives the transport's logs (default slog.Default()).
	Logger *slog.Logger
}

// Bounds of the authentication of raft connections.
const (
	// raftHandshakeTimeout bounds an accepted connection's TLS handshake.
	raftHandshakeTimeout = 10 * time.Second
	// raftAdmitWait is how long a connection from a node that is not (yet)
	// a member waits for its join to reach this node. A restarted node
	// starts raft before it joins the gossip, and the leader's appends
	// reach it first.
	raftAdmitWait = 5 * time.Second
	// raftMaxPending bounds the connections being authenticated at once;
	// more are refused at once (ReasonBusy).
	raftMaxPending = 64
)

// NewTCPTransport is raft's TCP transport on bindAddr ("host:port", port 0
// picks one), advertising advertise if not empty, without TLS.
func NewTCPTransport(bindAddr, advertise string, logger *slog.Logger) (*Transport, error) {
	return NewTransport(TransportConfig{Bind: bindAddr, Advertise: advertise, Logger: logger})
}

// Transport is raft's network transport over TCP, or over mutual TLS.
// With TLS, every request raft sends to a server travels to the stream
// layer's Dial with the server's ID beside its address, and Dial refuses a
// peer whose certificate names another node: raft's network transport
// dials by address only, and the node found at an address (a stale
// configuration, an address taken over) is not necessarily the server
// raft meant.
type Transport struct {
	*raft.NetworkTransport
	tagged bool // with TLS: targets carry the server's ID to Dial
}

// idSep separates a dial target's address from the ID of the server raft
// means to reach there (address first: an address has no '#', a node
// name may).
const idSep = "#"

func (t *Transport) target(id raft.ServerID, target raft.ServerAddress) raft.ServerAddress {
	if !t.tagged {
		return target
	}
	return target + idSep + raft.ServerAddress(id)
}

// AppendEntriesPipeline is raft.Transport's, dialing the server id.
func (t *Transport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	return t.NetworkTransport.AppendEntriesPipeline(id, t.target(id, target))
}

// AppendEntries is raft.Transport's, dialing the server id.
func (t *Transport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.NetworkTransport.AppendEntries(id, t.target(id, target), args, resp)
}

// RequestVote is raft.Transport's, dialing the server id.
func (t *Transport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.NetworkTransport.RequestVote(id, t.target(id, target), args, resp)
}

// RequestPreVote is raft.WithPreVote's, dialing the server id.
func (t *Transport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.NetworkTransport.RequestPreVote(id, t.target(id, target), args, resp)
}

// InstallSnapshot is raft.Transport's, dialing the server id.
func (t *Transport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return t.NetworkTransport.InstallSnapshot(id, t.target(id, target), args, resp, data)
}

// TimeoutNow is raft.Transport's, dialing the server id.
func (t *Transport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.NetworkTransport.TimeoutNow(id, t.target(id, target), args, resp)
}

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
)

// NewTransport is raft's network transport over TCP, or over mutual TLS
// with cfg.TLS. Unlike raft's own NewTCPTransport, closing it also closes
// the connections it accepted, so their reader goroutines end with it.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cp: raft listen on %s: %w", cfg.Bind, err)
	}
	adv := ln.Addr()
	if cfg.Advertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", cfg.Advertise); err != nil {
			ln.Close()
			return nil, fmt.Errorf("cp: raft advertise address: %w", err)
		}
	} else if a := ln.Addr().(*net.TCPAddr); a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("cp: raft binds %s; give an address peers can reach to advertise", cfg.Bind)
	}
	stream := &streamLayer{ln: ln, adv: adv, conns: map[net.Conn]struct{}{}, cfg: cfg,
		log: cfg.Logger.With("component", "raft-transport")}
	if cfg.TLS != nil {
		stream.server, stream.client = cfg.TLS.ServerConfig(), cfg.TLS.ClientConfig()
		stream.ready, stream.closing = make(chan net.Conn), make(chan struct{})
		stream.ctx, stream.cancel = context.WithCancel(context.Background())
		stream.wg.Add(1)
		go stream.acceptLoop()
	}
	nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 10 * time.Second,
		Logger: newHCLogger(cfg.Logger.With("component", "raft-transport")),
	})
	return &Transport{NetworkTransport: nt, tagged: cfg.TLS != nil}, nil
}

// streamLayer is a raft.StreamLayer over TCP, or mutual TLS, that owns
// its accepted connections.
type streamLayer struct {
	ln  net.Listener
	adv net.Addr
	cfg TransportConfig
	log *slog.Logger

	// With TLS: the configurations, the authenticated connections handed
	// to Accept, and the goroutines that accept and authenticate.
	server, client *tls.Config
	ready          chan net.Conn
	closing        chan struct{}
	ctx            context.Context // ends at Close
	cancel         context.CancelFunc
	wg             sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	pending int // connections being authenticated
	closed  bool
}

func (s *streamLayer) Accept() (net.Conn, error) {
	if s.server != nil {
		select {
		case c := <-s.ready:
			return c, nil
		case <-s.closing:
			return nil, net.ErrClosed
		}
	}
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(&trackedConn{Conn: c, s: s})
}

// track records a connection that Close must close.
func (s *streamLayer) track(tc net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		tc.Close()
		return nil, net.ErrClosed
	}
	s.conns[tc] = struct{}{}
	return tc, nil
}

func (s *streamLayer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// acceptLoop accepts TLS connections and authenticates each on a
// goroutine of its own, so that a slow or silent client holds up nobody.
func (s *streamLayer) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closing:
				return
			default:
			}
			// A transient error (out of descriptors): back off as raft's
			// own loop does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("raft: accept failed", "err", err, "retry_in", delay)
			select {
			case <-s.closing:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		s.mu.Lock()
		busy := s.pending >= raftMaxPending
		if !busy {
			s.pending++
		}
		s.mu.Unlock()
		if busy {
			s.refused(c.RemoteAddr().String(), "", &tlsutil.RefusedError{Reason: tlsutil.ReasonBusy,
				Err: fmt.Errorf("%d connections are already being authenticated", raftMaxPending)})
			c.Close()
			continue
		}
		s.wg.Add(1)
		go s.authenticate(c)
	}
}

// authenticate runs an accepted connection's TLS handshake and admission
// and hands it to Accept, or refuses it.
func (s *streamLayer) authenticate(raw net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
	}()
	ctx := s.ctx
	tc := tls.Server(raw, s.server)
	name, err := s.identify(ctx, tc)
	if err != nil {
		if ctx.Err() == nil || tlsutil.Reason(err) != tlsutil.ReasonHandshake {
			s.refused(raw.RemoteAddr().String(), name, err)
		}
		raw.Close()
		return
	}
	c, err := s.track(newIDConn(tc, name, s))
	if err != nil {
		return
	}
	select {
	case s.ready <- c:
	case <-s.closing:
		c.Close()
	}
}

// identify completes the handshake and admits the certificate's node.
func (s *streamLayer) identify(ctx context.Context, tc *tls.Conn) (string, error) {
	hctx, cancel := context.WithTimeout(ctx, raftHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return "", &tlsutil.RefusedError{Reason: tlsutil.Reason(err), Err: err}
	}
	name, err := tlsutil.PeerName(tc.ConnectionState())
	if err != nil {
		return "", err
	}
	if s.cfg.Admit != nil {
		actx, cancel := context.WithTimeout(ctx, raftAdmitWait)
		defer cancel()
		if err := s.cfg.Admit(actx, name); err != nil {
			return name, &tlsutil.RefusedError{Reason: tlsutil.ReasonNotMember, Err: fmt.Errorf("%q: %w", name, err)}
		}
	}
	return name, nil
}

func (s *streamLayer) refused(remote, name string, err error) {
	reason := tlsutil.Reason(err)
	if s.cfg.Refused != nil {
		s.cfg.Refused(reason, remote, name, err)
		return
	}
	s.log.Warn("raft: refused peer", "remote", remote, "peer", name, "reason", reason, "err", err)
}

func (s *streamLayer) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	conns := s.conns
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	if !already && s.closing != nil {
		close(s.closing)
		s.cancel()
	}
	err := s.ln.Close()
	for c := range conns {
		switch c := c.(type) {
		case *trackedConn:
			c.Conn.Close()
		case *idConn:
			c.Conn.Close()
		}
	}
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (s *streamLayer) Addr() net.Addr { return s.adv }

// Dial connects to address; with TLS, address is "HOST:PORT#ID"
// (Transport.target) and the peer must present the certificate of node
// ID, or the connection is refused (ReasonNameMismatch).
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.client == nil {
		return net.DialTimeout("tcp", string(address), timeout)
	}
	addr, want, ok := strings.Cut(string(address), idSep)
	if !ok || want == "" {
		return nil, fmt.Errorf("cp: raft dial %s: no server ID to check the peer's certificate against", address)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	got, err := tlsutil.PeerName(c.(*tls.Conn).ConnectionState())
	if err == nil && got != want {
		err = &tlsutil.RefusedError{Reason: tlsutil.ReasonNameMismatch,
			Err: fmt.Errorf("dialed as raft server %q, it presented the certificate of %q", want, got)}
	}
	if err != nil {
		c.Close()
		s.refused(addr, want, err)
		return nil, fmt.Errorf("cp: raft dial %s at %s: %w", want, addr, err)
	}
	return c, nil
}

type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.s.untrack(c) })
	return c.Conn.Close()
}

var _ io.Closer = (*trackedConn)(nil)

// The raft request types of hashicorp/raft's network transport: a byte
// before each request.
const (
	raftAppendEntries   = 0
	raftRequestVote     = 1
	raftInstallSnapshot = 2
	raftTimeoutNow      = 3
	raftRequestPreVote  = 4
)

// idConn is an accepted connection whose peer proved, by its
// certificate, to be node name. It reads each raft request ahead of the
// transport and passes it on only if its header names name as the
// sender: a member's certificate speaks for that member only.
type idConn struct {
	*tls.Conn
	name string
	s    *streamLayer
	once sync.Once

	rec  recorder
	dec  *codec.Decoder
	out  []byte // checked bytes not yet read by the transport
	snap int64  // snapshot bytes that follow the request, passed on as they are
}

func newIDConn(tc *tls.Conn, name string, s *streamLayer) *idConn {
	c := &idConn{Conn: tc, name: name, s: s}
	c.rec.r = bufio.NewReaderSize(tc, 64<<10)
	c.dec = codec.NewDecoder(&c.rec, &codec.MsgpackHandle{})
	return c
}

func (c *idConn) Close() error {
	c.once.Do(func() { c.s.untrack(c) })
	return c.Conn.Close()
}

// requestHeader is what idConn reads of a request: its sender and, for
// a snapshot, the size of the data after it.
type requestHeader struct {
	raft.RPCHeader
	Size int64
}

func (c *idConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.snap > 0 {
			n, err := c.rec.r.Read(p[:min(int64(len(p)), c.snap)])
			c.snap -= int64(n)
			return n, err
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// next reads the next request and checks its sender.
func (c *idConn) next() error {
	c.rec.buf = c.rec.buf[:0]
	if cap(c.rec.buf) > 4<<20 {
		c.rec.buf = nil // do not pin a large batch's buffer
	}
	typ, err := c.rec.ReadByte()
	if err != nil {
		return err
	}
	var h requestHeader
	if err := c.dec.Decode(&h); err != nil {
		return err
	}
	if id := string(h.ID); id != c.name {
		err := &tlsutil.RefusedError{Reason: tlsutil.ReasonRaftID,
			Err: fmt.Errorf("a raft request (type %d) from server %q on the connection of %q", typ, id, c.name)}
		c.s.refused(c.RemoteAddr().String(), c.name, err)
		c.Conn.Close()
		// EOF: the transport drops the connection without logging an
		// error of its own; the refusal is logged above.
		return io.EOF
	}
	if typ == raftInstallSnapshot {
		c.snap = h.Size
	}
	c.out = c.rec.buf
	return nil
}

// recorder reads from r and keeps what it read in buf, so that a request
// decoded to be checked can then be handed on as it arrived.
type recorder struct {
	r   *bufio.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func (r *recorder) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.buf = append(r.buf, b)
	}
	return b, err
}

func (r *recorder) UnreadByte() error {
	if err := r.r.UnreadByte(); err != nil {
		return err
	}
	r.buf = r.buf[:len(r.buf)-1]
	return nil
}

var _ io.ByteScanner = (*recorder)(nil)
