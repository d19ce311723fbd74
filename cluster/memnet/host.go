package memnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/shoal-dev/shoal/cluster/wire"
)

// Errors of dials, wrapped with the addresses involved; test for them
// with errors.Is.
var (
	// ErrUnreachable means a partition separates the two hosts.
	ErrUnreachable = errors.New("memnet: host unreachable")
	// ErrRefused means nothing is bound at the address, or it takes no
	// more connections.
	ErrRefused = errors.New("memnet: connection refused")
)

// errNetClosed is returned by binds and dials on a closed network; it
// satisfies wire.IsClosedError.
var errNetClosed = fmt.Errorf("memnet: network closed: %w", net.ErrClosed)

// Port ranges: port 0 binds from firstPickedPort up, outgoing connections
// get local ports from firstEphemeral up. The counters are separate so
// that dialling does not shift the ports later binds pick.
const (
	firstPickedPort = 30000
	firstEphemeral  = 49152
)

// Host is one machine of the network, the unit of partition. It
// implements wire.Network. Listeners and memberlist transports have
// separate port spaces (like TCP and UDP), but port 0 never picks a port
// used by either on this host.
type Host struct {
	n  *Network
	ip string
	// Guarded by n.mu.
	nextPort      int
	nextEphemeral int
}

var _ wire.Network = (*Host)(nil)

// IP is the host's address.
func (h *Host) IP() string { return h.ip }

// Listen listens for wire connections at addr, "ip:port" with this host's
// IP (or an unspecified IP, meaning this host); port 0 picks a free port.
// The listener's Addr has the port resolved.
func (h *Host) Listen(addr string) (wire.Listener, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errNetClosed
	}
	a, _, err := h.bindLocked(addr, func(a string) bool { return n.listeners[a] != nil })
	if err != nil {
		return nil, err
	}
	l := &listener{n: n, addr: a}
	n.listeners[a] = l
	return l, nil
}

// Dial connects from this host to the listener at addr. It never waits:
// it fails at once if ctx is done, a partition separates the hosts
// (ErrUnreachable) or nothing listens at addr (ErrRefused).
func (h *Host) Dial(ctx context.Context, addr string) (wire.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, err)
	}
	n := h.n
	n.mu.Lock()
	l := n.listeners[addr]
	if err := n.checkDialLocked(h.ip, addr, l != nil); err != nil {
		n.mu.Unlock()
		return nil, err
	}
	client, server := newConnPair(n, h.addr(h.ephemeralLocked()), addr)
	n.conns[client], n.conns[server] = struct{}{}, struct{}{}
	n.mu.Unlock()

	// Outside n.mu: the listener may close meanwhile, and its Close takes
	// n.mu after its own lock.
	if !l.push(server) {
		client.Close()
		server.Close()
		return nil, fmt.Errorf("memnet: dial %s: %w", addr, ErrRefused)
	}
	return client, nil
}

// checkDialLocked says why from cannot open a connection to addr, if it
// cannot; listening says whether something is bound there.
func (n *Network) checkDialLocked(from, addr string, listening bool) error {
	switch {
	case n.closed:
		return errNetClosed
	case !n.reachableLocked(from, hostOf(addr)):
		return fmt.Errorf("memnet: dial %s from %s: %w", addr, from, ErrUnreachable)
	case !listening:
		return fmt.Errorf("memnet: dial %s: %w", addr, ErrRefused)
	}
	return nil
}

// bindLocked checks that addr is on this host and resolves port 0 to a
// port that is free for both kinds of endpoint. taken says whether an
// address is bound for the kind being bound. It returns "ip:port".
func (h *Host) bindLocked(addr string, taken func(string) bool) (string, int, error) {
	ip, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("memnet: bind %q: %w", addr, err)
	}
	if ip != h.ip && !isUnspecified(ip) {
		return "", 0, fmt.Errorf("memnet: host %s cannot bind %s", h.ip, addr)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("memnet: bind %q: bad port", addr)
	}
	if port == 0 {
		if port, err = h.pickPortLocked(); err != nil {
			return "", 0, err
		}
	}
	a := h.addr(port)
	if taken(a) {
		return "", 0, fmt.Errorf("memnet: bind %s: address already in use", a)
	}
	return a, port, nil
}

// pickPortLocked returns the next port from firstPickedPort up that no
// listener or transport of this host uses.
func (h *Host) pickPortLocked() (int, error) {
	for range 65536 - firstPickedPort {
		port := h.nextPort
		if h.nextPort++; h.nextPort > 65535 {
			h.nextPort = firstPickedPort
		}
		a := h.addr(port)
		if h.n.listeners[a] == nil && h.n.transports[a] == nil {
			return port, nil
		}
	}
	return 0, fmt.Errorf("memnet: host %s has no free port", h.ip)
}

// ephemeralLocked returns the local port of a new outgoing connection.
// It is a label only, so reuse after wrapping around is harmless.
func (h *Host) ephemeralLocked() int {
	port := h.nextEphemeral
	if h.nextEphemeral++; h.nextEphemeral > 65535 {
		h.nextEphemeral = firstEphemeral
	}
	return port
}

func (h *Host) addr(port int) string { return net.JoinHostPort(h.ip, strconv.Itoa(port)) }

func isUnspecified(ip string) bool {
	if ip == "" {
		return true
	}
	parsed := net.ParseIP(ip)
	return parsed != nil && parsed.IsUnspecified()
}

// hostOf is the host part of "ip:port", or addr itself if it has no port.
func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}
