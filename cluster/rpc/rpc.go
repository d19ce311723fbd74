// Package rpc is shoal's peer RPC: one persistent, multiplexed connection
// per pair of nodes, carrying requests, responses and one-way messages as
// wire frames.
//
// Connections are identified by node name, exchanged in a hello frame when a
// connection opens. A node dials a peer the first time it needs it and
// keeps the connection until it breaks; the next call dials again, so a peer
// that restarts is reached at its new incarnation without any action by the
// caller. When two nodes dial each other at the same moment, both keep the
// connection dialed by the node whose name sorts first, and the loser is
// retired by a handshake on it (its dialer says it sends nothing new; the
// other side, once its calls on it are answered, says the same; the dialer
// closes it), so that nothing sent on it is lost: afterwards the pair
// shares one connection.
//
// With Config.Secure the connections run over mutual TLS (the Network's,
// wire.TCP.TLS) and a peer is who its certificate says: a hello that
// claims another name is refused, and so is a connection without a
// verified certificate. Config.Admit then decides whether that peer may
// talk to this node at all (the cluster admits its members). Each refusal
// is logged at Warn with the peer's address and the reason, and counted
// in Config.Refusals.
//
// Requests are served each on its own goroutine, except those of types
// registered with HandleInline: those handlers do not block, and run on the
// connection's reader goroutine in the order the requests were sent, with
// no goroutine, timer or cancellation to set up. One-way messages are
// handed to their handler on the reader goroutine too, in order, so a
// one-way handler must not block either.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// Handler serves a request. ctx ends when the caller's deadline passes or
// the node closes. from is the calling node's name. The returned error is
// sent to the caller as a *RemoteError. Handlers are called concurrently.
type Handler func(ctx context.Context, from string, body []byte) ([]byte, error)

// OnewayHandler receives a one-way message. It runs on the connection's
// reader goroutine, in the order messages were sent on that connection, and
// must not block: hand the work to another goroutine if it may take time.
// It owns body.
type OnewayHandler func(from string, body []byte)

// Config configures a Node. Name, Network and Resolve are required.
type Config struct {
	// Name identifies this node to its peers.
	Name string
	// Network makes connections: &wire.TCP{} in production.
	Network wire.Network
	// ListenAddr is where peers connect, e.g. "127.0.0.1:0".
	ListenAddr string
	// Resolve maps a peer's name to its address. It is called for each dial
	// and must be safe for concurrent use.
	Resolve func(name string) (addr string, ok bool)
	// DialTimeout bounds dialing and the hello exchange (default 2 s).
	DialTimeout time.Duration
	// RedialBackoff is how long after a failed dial further calls to that
	// peer fail at once with the same error (default 100 ms), so that a
	// dead peer costs one dial per backoff, not one per call.
	RedialBackoff time.Duration
	// MaxBacklog bounds the one-way messages queued for a peer while it is
	// being dialed (default 4096); beyond it Notify fails.
	MaxBacklog int
	// Logger receives connection errors (default slog.Default()).
	Logger *slog.Logger

	// Secure requires every connection, accepted or dialed, to run over
	// TLS with a verified peer certificate (Network must be a wire.TCP
	// with TLS): a peer's name is the one in its certificate, and a hello
	// that claims another is refused; a dialed peer must present the
	// certificate of the node it was dialed as.
	Secure bool
	// Admit, if set, is asked whether a peer that has said (and, with
	// Secure, proven) who it is may use this node; an error refuses the
	// connection. It may wait, until ctx ends, for the answer to become
	// yes (a member whose join has not reached this node yet).
	Admit func(ctx context.Context, name string) error
	// Refused, if set, is told of each refused connection (and then
	// counts and logs it): the reason (tlsutil's Reason constants), the
	// peer's address, the name it claimed or was dialed as, and the error.
	// Nil: the refusal is counted in Refusals and logged at Warn.
	Refused func(reason, remote, name string, err error)
	// Refusals, if set and Refused is not, counts refused peers under the
	// listener "rpc".
	Refusals *tlsutil.Refusals

	// MaxPending bounds the accepted connections that have not finished
	// their TLS handshake, hello and admission (each has DialTimeout to do
	// so); a connection past it is closed at once and refused as
	// tlsutil.ReasonBusy (default 256). MaxPendingPerAddr bounds them per
	// remote IP address (tlsutil.ReasonBusyAddr; default 64), so that one
	// address cannot take every place. Without TLS too: the hello is what
	// is awaited then.
	MaxPending, MaxPendingPerAddr int
}

func (c *Config) validate() error {
	if c.Name == "" || len(c.Name) > 255 || !utf8.ValidString(c.Name) {
		return fmt.Errorf("rpc: node name must be 1-255 bytes of UTF-8, got %q", c.Name)
	}
	if c.Network == nil {
		return errors.New("rpc: Config.Network is required")
	}
	if c.Resolve == nil {
		return errors.New("rpc: Config.Resolve is required")
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:0"
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.RedialBackoff <= 0 {
		c.RedialBackoff = 100 * time.Millisecond
	}
	if c.MaxBacklog <= 0 {
		c.MaxBacklog = 4096
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 256
	}
	if c.MaxPendingPerAddr <= 0 {
		c.MaxPendingPerAddr = 64
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Errors returned by a Node.
var (
	// ErrClosed: the node has been closed.
	ErrClosed = errors.New("rpc: node closed")
	// ErrUnknownPeer: Resolve does not know the peer's name.
	ErrUnknownPeer = errors.New("rpc: unknown peer")
	// ErrConnLost: the connection broke before the response arrived; the
	// request may or may not have been served.
	ErrConnLost = errors.New("rpc: connection lost")
	// ErrBacklogFull: too many one-way messages wait for a peer being dialed.
	ErrBacklogFull = errors.New("rpc: backlog full")
	// ErrUnreachable: the request was not sent (the peer could not be
	// dialed, or its connection refused the frame); it certainly was not
	// served, so it is safe to retry.
	ErrUnreachable = errors.New("rpc: peer unreachable")
	// ErrWouldBlock: what a HandleInline handler returns, before it did
	// anything, when serving this request would block (waiting for
	// something that has not happened yet): the request is then served
	// again on a goroutine of its own, as Handle's are, where Inline(ctx)
	// is false and the handler may wait.
	ErrWouldBlock = errors.New("rpc: inline handler would block")
)

// RemoteError is an error returned by the peer's handler.
type RemoteError struct {
	Peer, Type, Msg string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("rpc: %s on %s: %s", e.Type, e.Peer, e.Msg)
}

// Stats counts a node's RPC activity.
type Stats struct {
	Calls, CallErrors, Served, NotifySent, NotifyReceived atomic.Uint64
	Dials, DialErrors, ConnsAccepted, ProtocolErrors      atomic.Uint64
	// Refused counts connections refused for who the peer is (or is not):
	// no valid certificate, a name that is not its certificate's, not a
	// member. Config.Refusals has them by reason.
	Refused atomic.Uint64
}

// Node serves and makes peer calls. Create it with New; its methods are safe
// for concurrent use.
type Node struct {
	cfg  Config
	ln   wire.Listener
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	handlers atomic.Pointer[map[string]handler]
	oneways  atomic.Pointer[map[string]OnewayHandler]
	regMu    sync.Mutex // serialises handler registration

	nextID atomic.Uint64
	stats  Stats

	mu     sync.Mutex
	peers  map[string]*peer
	conns  map[*conn]struct{}
	closed bool

	// Accepted connections not yet admitted, in all and by remote IP
	// (an entry only while its count is above zero, so at most
	// MaxPending entries).
	pendMu     sync.Mutex
	pending    int
	pendByAddr map[string]int
}

type peer struct {
	name    string
	conn    *conn // preferred connection for outgoing traffic
	dial    *dialing
	lastErr error
	errAt   time.Time
	backlog []*wire.Frame
}

type dialing struct {
	done chan struct{}
	conn *conn
	err  error
}

// New listens on cfg.ListenAddr and starts accepting peers.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ln, err := cfg.Network.Listen(cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("rpc: listen on %s: %w", cfg.ListenAddr, err)
	}
	n := &Node{cfg: cfg, ln: ln, log: cfg.Logger, peers: map[string]*peer{}, conns: map[*conn]struct{}{},
		pendByAddr: map[string]int{}}
	n.ctx, n.stop = context.WithCancel(context.Background())
	n.handlers.Store(&map[string]handler{})
	n.oneways.Store(&map[string]OnewayHandler{})
	n.wg.Add(1)
	go n.acceptLoop()
	return n, nil
}

// Addr is the address peers dial.
func (n *Node) Addr() string { return n.ln.Addr() }

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Stats returns the node's counters.
func (n *Node) Stats() *Stats { return &n.stats }

// handler is a registered request handler.
type handler struct {
	h Handler
	// inline: served on the reader goroutine (HandleInline).
	inline bool
}

// Handle registers h for requests of type typ, replacing any earlier one.
// Each request is served on a goroutine of its own, with a context that
// ends when the caller's deadline passes.
func (n *Node) Handle(typ string, h Handler) { n.register(typ, handler{h: h}) }

// HandleInline registers h for requests of type typ, replacing any earlier
// one, to be served on the connection's reader goroutine: the requests of
// one connection are served one at a time, in the order they were sent,
// and the response is written from there. It is for handlers that do not
// block (lookups under a mutex, not I/O): nothing else on the connection
// is read while h runs, and h must not wait for a response on any
// connection (which can deadlock). h's context carries the caller's
// deadline as a value (Deadline reports it, for handlers that pass it on)
// but is not cancelled when it passes, only when the node closes. A
// handler that would have to block for one request returns ErrWouldBlock
// (having done nothing): that request is served on a goroutine of its own
// instead, out of order with the ones after it.
func (n *Node) HandleInline(typ string, h Handler) { n.register(typ, handler{h: h, inline: true}) }

func (n *Node) register(typ string, h handler) {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	m := cloneMap(*n.handlers.Load())
	m[typ] = h
	n.handlers.Store(&m)
}

// HandleOneway registers h for one-way messages of type typ.
func (n *Node) HandleOneway(typ string, h OnewayHandler) {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	m := cloneMap(*n.oneways.Load())
	m[typ] = h
	n.oneways.Store(&m)
}

func cloneMap[V any](m map[string]V) map[string]V {
	c := make(map[string]V, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Call sends a request of type typ to the named peer and waits for its
// response until ctx ends. The remaining deadline of ctx travels with the
// request. Errors: ErrClosed, ErrUnknownPeer, ErrConnLost, a dial error,
// ctx.Err(), or a *RemoteError from the handler.
func (n *Node) Call(ctx context.Context, peerName, typ string, body []byte) ([]byte, error) {
	n.stats.Calls.Add(1)
	resp, err := n.call(ctx, peerName, typ, body)
	if err != nil {
		n.stats.CallErrors.Add(1)
	}
	return resp, err
}

func (n *Node) call(ctx context.Context, peerName, typ string, body []byte) ([]byte, error) {
	p := callPool.Get().(*Pending)
	n.send(ctx, p, peerName, typ, body)
	resp, done, err := p.result(ctx)
	if done {
		*p = Pending{ch: p.ch}
		callPool.Put(p)
	}
	return resp, err
}

// callPool recycles the state of Calls whose response arrived: nothing
// else refers to it then (complete delivered on the channel and forgot it;
// the request frame was written before any response could come back).
// A call that failed or gave up is left to the collector: a late response
// or a writer still encoding its frame may yet touch it.
var callPool = sync.Pool{New: func() any { return &Pending{ch: make(chan result, 1)} }}

// Pending is a request sent with Go whose response has not been read yet.
type Pending struct {
	c     *conn
	id    uint64
	ch    chan result
	typ   string
	err   error      // the request was not sent
	frame wire.Frame // the request, queued on c
}

// Go sends a request of type typ to the named peer and returns once it is
// on its way (dialing first if needed, until ctx ends), without waiting
// for the response: read it with Wait. The remaining deadline of ctx
// travels with the request. Requests sent one after another by Go (from
// one goroutine, or from goroutines that order their Go calls) leave in
// that order on the peer's connection; the peer serves requests of types
// it registered with HandleInline in the order they arrive. (If the
// connection breaks, or is replaced by its twin after a simultaneous dial,
// requests before and after it travel on different connections.)
func (n *Node) Go(ctx context.Context, peerName, typ string, body []byte) *Pending {
	n.stats.Calls.Add(1)
	p := n.start(ctx, peerName, typ, body)
	if p.err != nil {
		n.stats.CallErrors.Add(1)
	}
	return p
}

// Wait waits for the response of a request sent with Go, until ctx ends.
// Errors are those of Call.
func (p *Pending) Wait(ctx context.Context) ([]byte, error) {
	resp, err := p.wait(ctx)
	if err != nil && p.err == nil && p.c != nil {
		p.c.n.stats.CallErrors.Add(1)
	}
	return resp, err
}

func (n *Node) start(ctx context.Context, peerName, typ string, body []byte) *Pending {
	p := &Pending{ch: make(chan result, 1)}
	n.send(ctx, p, peerName, typ, body)
	return p
}

// send sends the request of p (whose ch is ready), recording in p.err
// why it was not sent.
func (n *Node) send(ctx context.Context, p *Pending, peerName, typ string, body []byte) {
	for {
		n.sendOnce(ctx, p, peerName, typ, body)
		if !errors.Is(p.err, errStopped) {
			return
		}
		// The connection was retired between picking it and sending:
		// nothing was sent; the peer's current connection takes it.
		p.err = nil
	}
}

func (n *Node) sendOnce(ctx context.Context, p *Pending, peerName, typ string, body []byte) {
	c, err := n.connect(ctx, peerName)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		p.err = err
		return
	}
	id := n.nextID.Add(1)
	p.c, p.id, p.typ = c, id, typ
	if !c.addPending(id, p.ch) {
		p.err = fmt.Errorf("%w: connection to %s already closed", ErrUnreachable, peerName)
		return
	}
	f := &p.frame
	*f = wire.Frame{Kind: wire.KindRequest, ID: id, Type: typ, Body: body}
	if dl, ok := ctx.Deadline(); ok {
		if f.Timeout = time.Until(dl); f.Timeout <= 0 {
			c.removePending(id)
			p.err = context.DeadlineExceeded
			return
		}
	}
	if err := c.send(f); err != nil {
		c.removePending(id)
		if errors.Is(err, errStopped) {
			p.err = err
			return
		}
		p.err = fmt.Errorf("%w: send to %s: %w", ErrUnreachable, peerName, err)
	}
}

func (p *Pending) wait(ctx context.Context) ([]byte, error) {
	resp, _, err := p.result(ctx)
	return resp, err
}

// result waits for the response; answered reports that the peer answered
// (a response or a handler's error), after which nothing but the caller
// refers to p.
func (p *Pending) result(ctx context.Context) (resp []byte, answered bool, err error) {
	if p.err != nil {
		return nil, false, p.err
	}
	select {
	case r := <-p.ch:
		if r.err == nil {
			return r.body, true, nil
		}
		if re, ok := r.err.(*RemoteError); ok {
			re.Type = p.typ
			return nil, true, re
		}
		return nil, false, r.err
	case <-ctx.Done():
		p.c.removePending(p.id)
		return nil, false, ctx.Err()
	}
}

// Notify sends a one-way message to the named peer without waiting: if the
// peer is connected the frame is queued on its connection; if not, it is
// queued while the node dials in the background. Delivery is not
// guaranteed (a connection can break with frames queued); callers that need
// to know use Call or number their messages. It fails at once if the peer
// cannot currently be reached (recent dial failure), the backlog is full,
// or the node is closed.
func (n *Node) Notify(peerName, typ string, body []byte) error {
	f := &wire.Frame{Kind: wire.KindOneway, Type: typ, Body: body}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	p := n.peerLocked(peerName)
	for c := p.conn; c != nil; c = p.conn {
		// Sent outside n.mu: send waits for a retirement marker being sent.
		n.mu.Unlock()
		err := c.send(f)
		n.mu.Lock()
		if errors.Is(err, errStopped) {
			if n.closed {
				return ErrClosed
			}
			continue // retired meanwhile, nothing sent: the current connection takes it
		}
		if err != nil {
			return fmt.Errorf("rpc: notify %s: %w", peerName, err)
		}
		n.stats.NotifySent.Add(1)
		return nil
	}
	if p.dial == nil {
		if err := n.startDialLocked(p); err != nil {
			return err
		}
	}
	if len(p.backlog) >= n.cfg.MaxBacklog {
		return fmt.Errorf("%w for %s", ErrBacklogFull, peerName)
	}
	p.backlog = append(p.backlog, f)
	n.stats.NotifySent.Add(1)
	return nil
}

// Disconnect closes the connections to a peer, failing its in-flight calls
// with ErrConnLost, and forgets it. Use it when the peer leaves the cluster.
func (n *Node) Disconnect(peerName string) {
	n.mu.Lock()
	var victims []*conn
	for c := range n.conns {
		if c.peer == peerName {
			victims = append(victims, c)
		}
	}
	if p := n.peers[peerName]; p != nil && p.dial == nil {
		delete(n.peers, peerName)
	}
	n.mu.Unlock()
	for _, c := range victims {
		c.wc.Close()
	}
}

// Peers is how many peers the node keeps state for (connected, being
// dialed, or with messages waiting), for tests.
func (n *Node) Peers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.peers)
}

// ConnAddrs returns the remote addresses of the open connections whose
// other end named itself peerName in its hello, for logs: where traffic
// claiming that name came from.
func (n *Node) ConnAddrs(peerName string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for c := range n.conns {
		if c.peer == peerName {
			out = append(out, c.wc.RemoteAddr())
		}
	}
	return out
}

// Close stops the listener, closes every connection (failing in-flight
// calls with ErrConnLost), cancels running handlers' contexts and waits for
// every goroutine the node started. It is safe to call twice.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	conns := make([]*conn, 0, len(n.conns))
	for c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	err := n.ln.Close()
	for _, c := range conns {
		c.wc.Close()
	}
	// Cancel handlers only after their connections are gone, so that their
	// callers see ErrConnLost rather than this node's cancellation.
	n.stop()
	n.wg.Wait()
	return err
}

func (n *Node) peerLocked(name string) *peer {
	p := n.peers[name]
	if p == nil {
		p = &peer{name: name}
		n.peers[name] = p
	}
	return p
}

// connect returns the preferred connection to a peer, dialing if needed.
func (n *Node) connect(ctx context.Context, name string) (*conn, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	p := n.peerLocked(name)
	if c := p.conn; c != nil {
		n.mu.Unlock()
		return c, nil
	}
	if p.dial == nil {
		if err := n.startDialLocked(p); err != nil {
			n.mu.Unlock()
			return nil, err
		}
	}
	d := p.dial
	n.mu.Unlock()
	select {
	case <-d.done:
		return d.conn, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (n *Node) startDialLocked(p *peer) error {
	if p.lastErr != nil && time.Since(p.errAt) < n.cfg.RedialBackoff {
		return p.lastErr
	}
	d := &dialing{done: make(chan struct{})}
	p.dial = d
	n.wg.Add(1)
	go n.dial(p, d)
	return nil
}

func (n *Node) dial(p *peer, d *dialing) {
	defer n.wg.Done()
	n.stats.Dials.Add(1)
	c, err := n.dialPeer(p.name)
	n.mu.Lock()
	p.dial = nil
	if err == nil && n.closed {
		err = ErrClosed
	}
	if err != nil {
		n.stats.DialErrors.Add(1)
		p.lastErr, p.errAt, p.backlog = err, time.Now(), nil
		n.mu.Unlock()
		if c != nil {
			c.wc.Close()
		}
		d.err = err
		close(d.done)
		return
	}
	p.lastErr = nil
	n.registerLocked(c)
	d.conn = p.conn
	n.wg.Add(1)
	n.mu.Unlock()
	close(d.done)
	n.readLoop(c)
}

func (n *Node) dialPeer(name string) (*conn, error) {
	addr, ok := n.cfg.Resolve(name)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownPeer, name)
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
	defer cancel()
	wc, err := n.cfg.Network.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("rpc: dial %s at %s: %w", name, addr, err)
	}
	c := newConn(n, wc, true)
	if n.cfg.Secure {
		certName, err := n.identify(ctx, wc)
		if err == nil && certName != name {
			err = &tlsutil.RefusedError{Reason: tlsutil.ReasonNameMismatch,
				Err: fmt.Errorf("dialed as %q, it presented the certificate of %q", name, certName)}
		}
		if err != nil {
			n.refused(wc, name, err)
			return c, fmt.Errorf("rpc: %s at %s: %w", name, addr, err)
		}
	}
	if err := wc.Send(&wire.Frame{Kind: wire.KindHello, Body: []byte(n.cfg.Name)}); err != nil {
		return c, fmt.Errorf("rpc: hello to %s: %w", name, err)
	}
	got, err := n.readHello(wc)
	if err != nil {
		return c, fmt.Errorf("rpc: hello from %s at %s: %w", name, addr, err)
	}
	if got != name {
		return c, fmt.Errorf("rpc: %s answered as %q, expected %q", addr, got, name)
	}
	c.peer = name
	return c, nil
}

// readHello reads the first frame of a connection, bounded by DialTimeout.
func (n *Node) readHello(wc wire.Conn) (string, error) {
	t := time.AfterFunc(n.cfg.DialTimeout, func() { wc.Close() })
	defer t.Stop()
	f, err := wc.Recv()
	if err != nil {
		return "", err
	}
	if f.Kind != wire.KindHello {
		return "", fmt.Errorf("expected hello, got a %v frame", f.Kind)
	}
	name := string(f.Body)
	if name == "" || len(name) > 255 || !utf8.ValidString(name) {
		return "", fmt.Errorf("invalid node name %q in hello", name)
	}
	if name == n.cfg.Name {
		return "", fmt.Errorf("peer claims this node's own name %q", name)
	}
	return name, nil
}

// admit authenticates an accepted connection and reads its hello: the
// peer's name, which with Secure is its certificate's, and which Admit
// accepts. A refusal is a *tlsutil.RefusedError; other errors are the
// peer's protocol errors.
func (n *Node) admit(wc wire.Conn) (string, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
	defer cancel()
	certName := ""
	if n.cfg.Secure {
		var err error
		if certName, err = n.identify(ctx, wc); err != nil {
			return "", err
		}
	}
	name, err := n.readHello(wc)
	if err != nil {
		return "", err
	}
	if n.cfg.Secure && name != certName {
		return name, &tlsutil.RefusedError{Reason: tlsutil.ReasonNameMismatch,
			Err: fmt.Errorf("its hello claims %q, its certificate is %q's", name, certName)}
	}
	if n.cfg.Admit != nil {
		// Half the dial timeout: the dialer waits for the answer to its
		// hello for the whole of it.
		actx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout/2)
		defer cancel()
		if err := n.cfg.Admit(actx, name); err != nil {
			return name, &tlsutil.RefusedError{Reason: tlsutil.ReasonNotMember, Err: fmt.Errorf("%q: %w", name, err)}
		}
	}
	return name, nil
}

// identify completes a connection's TLS handshake and returns the node
// name in the peer's verified certificate.
func (n *Node) identify(ctx context.Context, wc wire.Conn) (string, error) {
	state, secured, err := wire.Handshake(ctx, wc)
	if err != nil {
		return "", &tlsutil.RefusedError{Reason: tlsutil.Reason(err), Err: err}
	}
	if !secured {
		return "", &tlsutil.RefusedError{Reason: tlsutil.ReasonNotTLS, Err: errors.New("a connection without TLS")}
	}
	return tlsutil.PeerName(state)
}

// refused logs and counts a connection refused for who its peer is; name
// is the name it claimed or was dialed as, if known.
func (n *Node) refused(wc wire.Conn, name string, err error) {
	reason := tlsutil.Reason(err)
	n.stats.Refused.Add(1)
	if n.cfg.Refused != nil {
		n.cfg.Refused(reason, wc.RemoteAddr(), name, err)
		return
	}
	n.cfg.Refusals.Add("rpc", reason)
	args := []any{"remote", wc.RemoteAddr(), "reason", reason, "err", err}
	if name != "" {
		args = append(args, "peer", name)
	}
	n.log.Warn("rpc: refused peer", args...)
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	for {
		wc, err := n.ln.Accept()
		if err != nil {
			if !wire.IsClosedError(err) {
				n.log.Error("rpc: accept failed; no longer accepting peers", "err", err)
			}
			return
		}
		ip := remoteIP(wc.RemoteAddr())
		if err := n.startPending(ip); err != nil {
			n.refused(wc, "", err)
			wc.Close()
			continue
		}
		n.wg.Add(1)
		go n.serveConn(wc, ip)
	}
}

// remoteIP is the host part of a remote address.
func remoteIP(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// startPending takes a place for an accepted connection from ip until
// endPending, or refuses it when there is none.
func (n *Node) startPending(ip string) error {
	n.pendMu.Lock()
	defer n.pendMu.Unlock()
	switch {
	case n.pending >= n.cfg.MaxPending:
		return &tlsutil.RefusedError{Reason: tlsutil.ReasonBusy,
			Err: fmt.Errorf("%d connections are already being admitted", n.pending)}
	case n.pendByAddr[ip] >= n.cfg.MaxPendingPerAddr:
		return &tlsutil.RefusedError{Reason: tlsutil.ReasonBusyAddr,
			Err: fmt.Errorf("%d connections from %s are already being admitted", n.pendByAddr[ip], ip)}
	}
	n.pending++
	n.pendByAddr[ip]++
	return nil
}

func (n *Node) endPending(ip string) {
	n.pendMu.Lock()
	defer n.pendMu.Unlock()
	n.pending--
	if n.pendByAddr[ip]--; n.pendByAddr[ip] <= 0 {
		delete(n.pendByAddr, ip)
	}
}

// Pending is how many accepted connections are being admitted.
func (n *Node) Pending() int {
	n.pendMu.Lock()
	defer n.pendMu.Unlock()
	return n.pending
}

// serveConn runs the accepting side of a connection: the TLS handshake,
// hello and admission (holding a place taken by startPending for ip),
// then reading.
func (n *Node) serveConn(wc wire.Conn, ip string) {
	defer n.wg.Done()
	name, err := n.admit(wc)
	n.endPending(ip)
	if err == nil {
		err = wc.Send(&wire.Frame{Kind: wire.KindHello, Body: []byte(n.cfg.Name)})
	}
	if err != nil {
		var re *tlsutil.RefusedError
		switch {
		case n.ctx.Err() != nil:
			// This node is closing: the handshake or the admission was cut
			// short, the peer refused nothing.
		case errors.As(err, &re):
			n.refused(wc, name, err)
		default:
			n.stats.ProtocolErrors.Add(1)
			n.log.Warn("rpc: rejected connection", "remote", wc.RemoteAddr(), "err", err)
		}
		wc.Close()
		return
	}
	c := newConn(n, wc, false)
	c.peer = name
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		wc.Close()
		return
	}
	n.stats.ConnsAccepted.Add(1)
	n.registerLocked(c)
	n.wg.Add(1)
	n.mu.Unlock()
	n.readLoop(c)
}

// registerLocked records a connection that finished its hello and decides
// whether it becomes the peer's preferred connection. Of two live
// connections between the same pair, the one dialed by the node whose name
// sorts first wins on both sides; the dialer of the loser retires it.
func (n *Node) registerLocked(c *conn) {
	n.conns[c] = struct{}{}
	p := n.peerLocked(c.peer)
	old := p.conn
	if old == nil || old.isDead() {
		n.promoteLocked(p, c)
		return
	}
	selfFirst := n.cfg.Name < c.peer
	if c.dialedBySelf == selfFirst { // c is the winner
		n.promoteLocked(p, c)
		if old.dialedBySelf {
			old.retire()
		}
	} else if c.dialedBySelf {
		c.retire()
	}
}

func (n *Node) promoteLocked(p *peer, c *conn) {
	p.conn = c
	for _, f := range p.backlog {
		if err := c.wc.Send(f); err != nil {
			break
		}
	}
	p.backlog = nil
}

// readLoop reads a connection until it breaks. The caller has done wg.Add.
func (n *Node) readLoop(c *conn) {
	defer n.wg.Done()
	var err error
	for {
		var f wire.Frame
		if f, err = c.wc.Recv(); err != nil {
			break
		}
		if err = n.dispatch(c, f); err != nil {
			n.stats.ProtocolErrors.Add(1)
			break
		}
	}
	c.wc.Close()
	n.connGone(c)
	if err != nil && err != io.EOF && !wire.IsClosedError(err) {
		n.log.Warn("rpc: closed connection after error", "peer", c.peer, "remote", c.wc.RemoteAddr(), "err", err)
	}
}

func (n *Node) dispatch(c *conn, f wire.Frame) error {
	switch f.Kind {
	case wire.KindRequest:
		h, ok := (*n.handlers.Load())[f.Type]
		if ok && h.inline {
			n.serveInline(c, h.h, f)
			break
		}
		n.wg.Add(1)
		c.startServing()
		go n.serve(c, h.h, f)
	case wire.KindOneway:
		switch f.Type {
		case retireMsg:
			c.onRetire()
			return nil
		case retiredMsg:
			c.onRetired()
			return nil
		}
		n.stats.NotifyReceived.Add(1)
		if h := (*n.oneways.Load())[f.Type]; h != nil {
			h(c.peer, f.Body)
		} else {
			n.log.Debug("rpc: no handler for one-way message", "type", f.Type, "peer", c.peer)
		}
	case wire.KindResponse, wire.KindError:
		c.complete(f)
	default:
		return fmt.Errorf("unexpected %v frame after hello", f.Kind)
	}
	return nil
}

func (n *Node) serve(c *conn, h Handler, f wire.Frame) {
	defer n.wg.Done()
	defer c.doneServing()
	n.stats.Served.Add(1)
	ctx, cancel := n.ctx, context.CancelFunc(func() {})
	if f.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, f.Timeout)
	}
	body, err := n.runHandler(ctx, h, c.peer, f)
	cancel()
	n.respond(c, f, body, err)
}

// serveInline serves a request of a HandleInline type on the reader
// goroutine: the deadline travels as a value, without a timer.
func (n *Node) serveInline(c *conn, h Handler, f wire.Frame) {
	ctx := inlineCtx{Context: n.ctx}
	if f.Timeout > 0 {
		ctx.deadline, ctx.hasDeadline = time.Now().Add(f.Timeout), true
	}
	body, err := n.runHandler(ctx, h, c.peer, f)
	if err == ErrWouldBlock {
		n.wg.Add(1)
		c.startServing()
		go n.serve(c, h, f)
		return
	}
	n.stats.Served.Add(1)
	n.respond(c, f, body, err)
}

// inlineCtx reports the caller's deadline without enforcing it: the
// context of an inline handler, which does not block and so has nothing
// to cancel.
type inlineCtx struct {
	context.Context
	deadline    time.Time
	hasDeadline bool
}

func (c inlineCtx) Deadline() (time.Time, bool) { return c.deadline, c.hasDeadline }

// Inline reports whether ctx is that of a request served on its
// connection's reader goroutine (HandleInline): a handler that would
// block then returns ErrWouldBlock.
func Inline(ctx context.Context) bool {
	_, ok := ctx.(inlineCtx)
	return ok
}

func (n *Node) respond(c *conn, f wire.Frame, body []byte, err error) {
	resp := &wire.Frame{Kind: wire.KindResponse, ID: f.ID, Body: body}
	if err != nil {
		resp.Kind, resp.Body = wire.KindError, []byte(err.Error())
	}
	if err := c.wc.Send(resp); err != nil && !wire.IsClosedError(err) {
		n.log.Warn("rpc: could not send response", "peer", c.peer, "type", f.Type, "err", err)
	}
}

func (n *Node) runHandler(ctx context.Context, h Handler, from string, f wire.Frame) (body []byte, err error) {
	if h == nil {
		return nil, fmt.Errorf("no handler for %q", f.Type)
	}
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("rpc: handler panicked", "type", f.Type, "peer", from, "panic", r)
			body, err = nil, fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return h(ctx, from, f.Body)
}

// connGone forgets a broken connection and fails its pending calls.
func (n *Node) connGone(c *conn) {
	n.mu.Lock()
	delete(n.conns, c)
	if p := n.peers[c.peer]; p != nil && p.conn == c {
		p.conn = n.otherConnLocked(c)
		// A peer with nothing left (no connection, dial, backlog or
		// recent dial error) is forgotten: the names that peers give
		// in their hellos must not pile up here.
		if p.conn == nil && p.dial == nil && len(p.backlog) == 0 &&
			(p.lastErr == nil || time.Since(p.errAt) >= n.cfg.RedialBackoff) {
			delete(n.peers, c.peer)
		}
	}
	n.mu.Unlock()
	c.failAll()
}

// otherConnLocked is another live connection to c's peer (kept for its
// incoming traffic) that can take over from c at once, or nil.
func (n *Node) otherConnLocked(c *conn) *conn {
	for o := range n.conns {
		if o != c && o.peer == c.peer && !o.isDead() && !o.isRetired() {
			return o
		}
	}
	return nil
}
