package memnet

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Queue sizes of a transport. A packet arriving at a full queue is lost,
// as UDP loses datagrams at a full socket buffer; a stream dialled to a
// full backlog is refused.
const (
	packetQueue   = 1024
	streamBacklog = 64
)

// Transport is a memberlist transport on the in-memory network. Packets
// are routed like UDP datagrams: best effort, faulted and blocked by
// partitions, silently. Streams are buffered in-memory connections that
// faults never touch; a partition only refuses new ones.
type Transport struct {
	n    *Network
	host *Host
	addr string       // "ip:port"
	udp  *net.UDPAddr // From of the packets it sends
	tcp  *net.TCPAddr

	packets chan *memberlist.Packet
	streams chan net.Conn

	mu       sync.Mutex // orders queueing against shutdown
	shutdown bool
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Transport binds a memberlist transport to port on this host, whose name
// must be an IP address; port 0 picks a free port.
func (h *Host) Transport(port int) (*Transport, error) {
	ip := net.ParseIP(h.ip)
	if ip == nil {
		return nil, fmt.Errorf("memnet: host %q is not an IP address", h.ip)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errNetClosed
	}
	a, port, err := h.bindLocked(h.addr(port), func(a string) bool { return n.transports[a] != nil })
	if err != nil {
		return nil, err
	}
	t := &Transport{
		n: n, host: h, addr: a,
		udp:     &net.UDPAddr{IP: ip, Port: port},
		tcp:     &net.TCPAddr{IP: ip, Port: port},
		packets: make(chan *memberlist.Packet, packetQueue),
		streams: make(chan net.Conn, streamBacklog),
	}
	n.transports[a] = t
	return t, nil
}

// Addr is the transport's "ip:port".
func (t *Transport) Addr() string { return t.addr }

// FinalAdvertiseAddr returns the given address, with the transport's own
// IP for an empty ip and its own port for port 0.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	adv := t.udp.IP
	if ip != "" {
		if adv = net.ParseIP(ip); adv == nil {
			return nil, 0, fmt.Errorf("memnet: advertise address %q is not an IP address", ip)
		}
	}
	if port == 0 {
		port = t.udp.Port
	}
	return adv, port, nil
}

// WriteTo sends a copy of b to addr and returns at once. Like UDP it
// reports success whether the packet arrives, is faulted, blocked by a
// partition or sent where nobody listens; it fails only once this
// transport is shut down.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.isShutdown() {
		return time.Time{}, fmt.Errorf("memnet: write to %s: %w", addr, net.ErrClosed)
	}
	// Taken before routing: an undelayed packet can be answered before
	// route returns, and memberlist measures round trips from this time.
	sent := time.Now()
	buf := append([]byte(nil), b...) // memberlist reuses b
	tr := Traffic{From: t.host.ip, To: hostOf(addr), Kind: Packet}
	t.n.route(tr, func(clone bool) bool {
		p := &memberlist.Packet{Buf: buf, From: t.udp, Timestamp: time.Now()}
		if clone {
			p.Buf = append([]byte(nil), buf...)
		}
		// Looked up on arrival: a delayed packet reaches whoever is bound
		// by then, if anyone.
		dst := t.n.transport(addr)
		return dst != nil && dst.receive(p)
	})
	return sent, nil
}

// WriteToAddress is WriteTo; the node name is not needed to route.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (n *Network) transport(addr string) *Transport {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.transports[addr]
}

// receive queues an arriving packet without blocking; false if it was
// lost to shutdown or a full queue.
func (t *Transport) receive(p *memberlist.Packet) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shutdown {
		return false
	}
	select {
	case t.packets <- p:
		return true
	default:
		return false
	}
}

// PacketCh delivers arriving packets. It is never closed.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// StreamCh delivers accepted streams. It is never closed; the receiver
// owns and must close each stream.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// DialTimeout opens a stream to the transport at addr. It never waits, so
// timeout is not needed: it fails at once if a partition separates the
// hosts (ErrUnreachable) or nothing is bound at addr or its backlog is
// full (ErrRefused). The caller owns the stream and must close it.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.isShutdown() {
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, net.ErrClosed)
	}
	n := t.n
	n.mu.Lock()
	dst := n.transports[addr]
	err := n.checkDialLocked(t.host.ip, addr, dst != nil)
	if err != nil {
		n.mu.Unlock()
		return nil, err
	}
	local := &net.TCPAddr{IP: t.tcp.IP, Port: t.host.ephemeralLocked()}
	n.mu.Unlock()

	mine, theirs := newStreamPair(local, dst.tcp)
	if !dst.accept(theirs) {
		mine.Close()
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, ErrRefused)
	}
	return mine, nil
}

// DialAddressTimeout is DialTimeout; the node name is not needed to route.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// accept queues a dialled stream for StreamCh; false if shut down or the
// backlog is full.
func (t *Transport) accept(s net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shutdown {
		return false
	}
	select {
	case t.streams <- s:
		return true
	default:
		return false
	}
}

func (t *Transport) isShutdown() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.shutdown
}

// Shutdown unbinds the transport: later packets to its address are lost
// and dials refused, and streams not yet taken from StreamCh are closed,
// so their dialers read io.EOF. Its channels stay open (memberlist's
// readers may still be selecting on them) but receive nothing more.
// Streams already accepted stay open. Safe to call twice.
func (t *Transport) Shutdown() error {
	t.mu.Lock()
	if t.shutdown {
		t.mu.Unlock()
		return nil
	}
	t.shutdown = true
	t.closeBacklogLocked()
	t.mu.Unlock()

	t.n.mu.Lock()
	if t.n.transports[t.addr] == t {
		delete(t.n.transports, t.addr)
	}
	t.n.mu.Unlock()
	return nil
}

func (t *Transport) closeBacklogLocked() {
	for {
		select {
		case s := <-t.streams:
			s.Close()
		default:
			return
		}
	}
}
