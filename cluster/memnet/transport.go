package memnet

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Transport is a memberlist transport on the in-memory network: packets
// are routed (and faulted) like UDP datagrams, streams are buffered pipes
// that only partitions can refuse.
type Transport struct {
	n        *Network
	host     *Host
	addr     string
	ip       net.IP
	port     int
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	shutdown chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Transport binds a memberlist transport to port on this host (0 picks).
func (h *Host) Transport(port int) (*Transport, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	a, err := h.bindLocked(net.JoinHostPort(h.ip, strconv.Itoa(port)), func(a string) bool { return n.transports[a] != nil })
	if err != nil {
		return nil, err
	}
	_, p, _ := net.SplitHostPort(a)
	pn, _ := strconv.Atoi(p)
	t := &Transport{
		n: n, host: h, addr: a, ip: net.ParseIP(h.ip), port: pn,
		packetCh: make(chan *memberlist.Packet, 1024), streamCh: make(chan net.Conn, 64),
		shutdown: make(chan struct{}),
	}
	if t.ip == nil {
		return nil, fmt.Errorf("memnet: host %q is not an IP address", h.ip)
	}
	n.transports[a] = t
	return t, nil
}

// Addr is the transport's "ip:port".
func (t *Transport) Addr() string { return t.addr }

// FinalAdvertiseAddr returns the given address, or the transport's own
// for an empty IP or port 0.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	adv := t.ip
	if ip != "" {
		if adv = net.ParseIP(ip); adv == nil {
			return nil, 0, fmt.Errorf("memnet: advertise address %q is not an IP", ip)
		}
	}
	if port == 0 {
		port = t.port
	}
	return adv, port, nil
}

// WriteTo sends a packet; like UDP it reports success whatever happens.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	buf := append([]byte(nil), b...)
	from := &net.UDPAddr{IP: t.ip, Port: t.port}
	t.n.mu.Lock()
	dst := t.n.transports[addr]
	t.n.mu.Unlock()
	if dst == nil {
		return now, nil
	}
	t.n.route(Traffic{From: t.host.ip, To: hostOf(addr), Kind: Packet}, func() {
		select {
		case dst.packetCh <- &memberlist.Packet{Buf: buf, From: from, Timestamp: time.Now()}:
		case <-dst.shutdown:
		default: // a full socket buffer drops, as UDP does
		}
	})
	return now, nil
}

func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *Transport) StreamCh() <-chan net.Conn           { return t.streamCh }

// DialTimeout opens a stream to another transport. A partition refuses it
// at once; so does an address nobody listens on.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	n := t.n
	n.mu.Lock()
	dst := n.transports[addr]
	reachable := n.reachableLocked(t.host.ip, hostOf(addr))
	closed := n.closed
	n.mu.Unlock()
	switch {
	case closed:
		return nil, fmt.Errorf("memnet: network closed")
	case !reachable:
		return nil, fmt.Errorf("memnet: dial %s from %s: host unreachable", addr, t.host.ip)
	case dst == nil:
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, errRefused)
	}
	local := &net.TCPAddr{IP: t.ip, Port: t.port}
	remote := &net.TCPAddr{IP: dst.ip, Port: dst.port}
	client, server := newPipe(local, remote)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dst.streamCh <- server:
		return client, nil
	case <-dst.shutdown:
	case <-timer.C:
	}
	client.Close()
	return nil, fmt.Errorf("memnet: dial %s: %w", addr, errRefused)
}

func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// Shutdown unbinds the transport: later packets to it are dropped and
// dials refused. Safe to call twice.
func (t *Transport) Shutdown() error {
	t.once.Do(func() {
		close(t.shutdown)
		t.n.mu.Lock()
		if t.n.transports[t.addr] == t {
			delete(t.n.transports, t.addr)
		}
		t.n.mu.Unlock()
	})
	return nil
}
