// Package cluster is shoal's membership, peer RPC and invalidation bus.
//
// A Node gossips membership with hashicorp/memberlist, gossiping its
// metadata (RPC, HTTP and raft addresses, cache mode, version), talks to
// other nodes over one multiplexed connection per pair (package rpc), and
// fans messages out to every other member over that RPC (Bus). It knows
// nothing of caches or git.
//
// Events (join, leave, fail, update) reach subscribers in the order
// memberlist observed them. Memberlist is used only for membership and for
// its periodic push/pull exchange, which carries the bus's latest sequence
// numbers; messages never ride on gossip, which is slow and lossy.
package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-dev/shoal/cluster/rpc"
	"github.com/shoal-dev/shoal/internal/beat"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// ErrClosed is returned by a Node's methods after Close.
var ErrClosed = errors.New("cluster: node closed")

// Node is one member of a shoal cluster. Its methods are safe for
// concurrent use.
type Node struct {
	cfg Config
	ml  *memberlist.Memberlist
	// gossipAddr is ml's advertised "ip:port", fixed at Start.
	gossipAddr string
	rpc        *rpc.Node
	bus        *Bus
	self       Meta

	refusals *refusals
	failures atomic.Uint64       // members this node saw fail
	keyMu    sync.Mutex          // orders keyring changes and reads
	keyring  *memberlist.Keyring // nil: gossip is not encrypted

	mu      sync.Mutex
	members map[string]*Member // every member seen, with its last state; departed ones pruned (prune)
	subs    map[*Subscription]struct{}
	closed  bool
	refused error             // why the last merge was refused (memberlist keeps only the text)
	seeds   []string          // Join's seed addresses, host names unresolved: rejoined by reconnectLoop
	leaving map[string]uint64 // members that announced a graceful leave, by incarnation

	stopping  bool          // set (under mu) before stop is closed: no goroutine starts after
	stop      chan struct{} // closed by shutdown; stops the reconnect loop and catchUp
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start starts a node: the peer RPC listener, the bus and memberlist. The
// node is alone until Join.
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, members: map[string]*Member{}, subs: map[*Subscription]struct{}{}, leaving: map[string]uint64{},
		refusals: newRefusals(cfg.Refusals, cfg.Logger, cfg.Now)}
	kr, err := n.openKeyring()
	if err != nil {
		return nil, err
	}
	n.keyring = kr
	rc := rpc.Config{
		Name: cfg.Name, Network: cfg.Network, ListenAddr: cfg.RPCAddr, DialTimeout: cfg.DialTimeout,
		Resolve: n.resolveRPC, Logger: cfg.Logger.With("component", "rpc"),
		Refused: func(reason, remote, claimed string, err error) {
			n.refusals.refuse(ListenerRPC, reason, remote, claimed, err.Error())
		},
	}
	if cfg.TLS != nil {
		rc.Secure, rc.Admit = true, n.AdmitPeer
	}
	r, err := rpc.New(rc)
	if err != nil {
		return nil, err
	}
	n.rpc = r
	r.Handle(rpcLeave, n.onLeaveNotice)
	r.Handle(rpcKeyring, n.onKeyring)
	inc := uint64(cfg.Now().UnixNano())
	n.self = Meta{
		RPC: advertisedRPC(r.Addr(), cfg), HTTP: cfg.HTTPAddr, Raft: cfg.RaftAddr, RESP: cfg.RESPAddr,
		CacheMode: cfg.CacheMode, Version: cfg.Version, Incarnation: inc, TLS: cfg.TLS != nil,
	}
	if _, err := n.self.encode(); err != nil {
		r.Close()
		return nil, err
	}
	n.bus = newBus(busConfig{
		self: cfg.Name, incarnation: inc, rpc: r, members: n.peerNames, member: n.busMember,
		refuse: func(reason, from, detail string) {
			n.refusals.refuse(ListenerBus, reason, n.rpcAddrsOf(from), from, detail)
		},
		now: cfg.Now, gap: cfg.GapTimeout, firstWait: cfg.DialTimeout, log: cfg.Logger.With("component", "bus"),
	})
	ml, err := memberlist.Create(n.memberlistConfig())
	if err != nil {
		n.bus.close()
		r.Close()
		return nil, fmt.Errorf("cluster: starting memberlist: %w", err)
	}
	n.ml = ml
	// Read once: memberlist forgets its own node some seconds after it
	// left (GossipToTheDeadTime), and LocalNode then dereferences nil,
	// while the reconnect loop may still ask during a slow Close.
	ln := ml.LocalNode()
	n.gossipAddr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	n.stop = make(chan struct{})
	n.wg.Add(1)
	go n.reconnectLoop()
	return n, nil
}

// reconnectLoop tries, every ReconnectInterval, to join one member that
// failed (not one that left) within ReconnectTimeout. Memberlist stops
// gossiping to a dead member after GossipToTheDeadTime, so without this
// the two sides of a long partition would never merge again. It also
// resolves Join's seeds again and joins those of their addresses that no
// member has (rejoinSeeds).
func (n *Node) reconnectLoop() {
	defer n.wg.Done()
	t := beat.NewTicker(n.cfg.ReconnectInterval) // on the process's beat: see package beat
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	turn := 0
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.prune()
		n.rejoinSeeds(ctx)
		failed := n.failedMembers()
		if len(failed) == 0 {
			continue
		}
		m := failed[turn%len(failed)]
		turn++
		if _, err := n.ml.Join([]string{m.Addr}); err == nil {
			n.cfg.Logger.Info("cluster: reconnected to a failed member", "member", m.Name)
		}
	}
}

// prune forgets the members that departed (failed or left) longer than
// DepartedRetention ago, and the longest departed past MaxDeparted.
func (n *Node) prune() {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pruneLocked(now)
}

func (n *Node) pruneLocked(now time.Time) {
	var departed []*Member
	for name, m := range n.members {
		if m.State != StateFailed && m.State != StateLeft || name == n.cfg.Name {
			continue
		}
		if now.Sub(m.Since) >= n.cfg.DepartedRetention {
			delete(n.members, name)
			continue
		}
		departed = append(departed, m)
	}
	if over := len(departed) - n.cfg.MaxDeparted; over > 0 {
		slices.SortFunc(departed, func(a, b *Member) int { return a.Since.Compare(b.Since) })
		for _, m := range departed[:over] {
			delete(n.members, m.Name)
		}
	}
}

// resolveSeeds turns seed addresses into "ip:port" addresses, resolving
// host names (every address a name has), leaving out this node's own
// gossip address. The error lists the names that did not resolve; the
// addresses are those that did.
func (n *Node) resolveSeeds(ctx context.Context, seeds []string) ([]string, error) {
	lookup := n.cfg.LookupHost
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	self := n.GossipAddr()
	var out []string
	var errs []error
	add := func(a string) {
		if a != self && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, s := range seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("seed %q: %w", s, err))
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			add(net.JoinHostPort(ip.Unmap().String(), port))
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := lookup(lctx, host)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("seed %q: %w", s, err))
			continue
		}
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				add(net.JoinHostPort(a.Unmap().String(), port))
			}
		}
	}
	return out, errors.Join(errs...)
}

// rejoinSeeds resolves Join's seeds again and joins the addresses that no
// member has (alive, suspect, or failed recently enough for
// reconnectLoop to retry it).
func (n *Node) rejoinSeeds(ctx context.Context) {
	n.mu.Lock()
	seeds := n.seeds
	n.mu.Unlock()
	if len(seeds) == 0 {
		return
	}
	addrs, err := n.resolveSeeds(ctx, seeds)
	if err != nil && ctx.Err() == nil {
		n.cfg.Logger.Debug("cluster: resolving the seeds", "err", err)
	}
	known := map[string]bool{}
	now := n.cfg.Now()
	for _, m := range n.Members() {
		if m.State == StateAlive || m.State == StateSuspect || m.State == StateFailed && now.Sub(m.Since) < n.cfg.ReconnectTimeout {
			known[m.Addr] = true
		}
	}
	var fresh []string
	for _, a := range addrs {
		if !known[a] {
			fresh = append(fresh, a)
		}
	}
	if len(fresh) == 0 {
		return
	}
	if got, _ := n.ml.Join(fresh); got > 0 {
		n.cfg.Logger.Info("cluster: joined through a seed address no member had", "addrs", strings.Join(fresh, ","), "answered", got)
	}
}

func (n *Node) failedMembers() []Member {
	now := n.cfg.Now()
	var out []Member
	for _, m := range n.Members() {
		if m.State == StateFailed && now.Sub(m.Since) < n.cfg.ReconnectTimeout {
			out = append(out, m)
		}
	}
	return out
}

// advertisedRPC turns the RPC listener's address into one peers can dial:
// a wildcard host is replaced by the gossip advertise or bind host.
func advertisedRPC(listen string, cfg Config) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return listen
	}
	for _, a := range []string{cfg.AdvertiseAddr, cfg.BindAddr} {
		if h, _, err := net.SplitHostPort(a); err == nil {
			if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
				return net.JoinHostPort(h, port)
			}
		}
	}
	return listen
}

func (n *Node) memberlistConfig() *memberlist.Config {
	base := *n.cfg.Memberlist
	mc := &base
	mc.Name = n.cfg.Name
	if n.cfg.Transport != nil {
		mc.Transport = n.cfg.Transport
		// Let the transport advertise its own address.
		mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	} else {
		host, port, _ := config.CheckAddr(n.cfg.BindAddr)
		mc.BindAddr, mc.BindPort = host, port
		mc.AdvertisePort = port
	}
	if n.cfg.AdvertiseAddr != "" {
		host, port, _ := config.CheckAddr(n.cfg.AdvertiseAddr)
		mc.AdvertiseAddr, mc.AdvertisePort = host, port
	}
	d := &delegate{n: n}
	mc.Delegate, mc.Events, mc.Merge, mc.Alive = d, d, d, d
	mc.Logger = memberlistLogger(n.cfg.Logger, n.refusals)
	if n.keyring != nil {
		mc.Keyring, mc.SecretKey = n.keyring, nil
		// Refuse unencrypted traffic both ways: a node without a key
		// cannot join, and this node never speaks in the clear.
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	return mc
}

// Join contacts the seed gossip addresses ("host:port", the host an IP
// address or a DNS name) and merges with their cluster, retrying every
// 200 ms until at least one answers or ctx ends. It returns how many
// addresses answered. A name is resolved again at every attempt
// (Config.LookupHost) and stands for every address it resolves to but
// this node's own: a Kubernetes headless Service's name, whose addresses
// change as pods restart, is enough. The node keeps the seeds: while it
// runs, it resolves them again every ReconnectInterval and joins the
// addresses no member has (so nodes that started alone, each seeing only
// itself behind the name, merge, and so do halves that stayed apart
// past ReconnectTimeout). A seed cluster whose members' metadata cannot
// be read is refused with an error saying so.
func (n *Node) Join(ctx context.Context, seeds []string) (int, error) {
	if len(seeds) == 0 {
		return 0, nil
	}
	n.mu.Lock()
	n.seeds = slices.Clone(seeds)
	n.mu.Unlock()
	for {
		n.mu.Lock()
		n.refused = nil
		n.mu.Unlock()
		addrs, err := n.resolveSeeds(ctx, seeds)
		got := 0
		if len(addrs) > 0 {
			var jerr error
			got, jerr = n.ml.Join(addrs)
			err = errors.Join(err, jerr)
		} else if err == nil {
			err = errors.New("the seeds name only this node")
		}
		if got > 0 {
			n.catchUp(addrs)
			return got, nil
		}
		n.mu.Lock()
		refused := n.refused
		n.mu.Unlock()
		if refused != nil {
			return 0, refused
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("cluster: join %v: %w (last error: %v)", seeds, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// catchUp exchanges state with the seeds once more, a probe interval
// after a join. memberlist answers a join's push/pull before it merges
// the joiner, so a node that joined through the same seed a moment earlier
// can be missing from the state this node got back; and the gossip that
// announces that node goes to the members its senders know, and may be
// spent before this node is among them. This node would then learn of it
// only at a periodic push/pull (every 5 s on the loopback preset): 32
// nodes joining one after another through one seed missed the 3 s bound
// of TestScaleConvergesAndHolds this way (a node had not heard of another
// that joined just before it). The second exchange finds the seed with
// every earlier join merged.
func (n *Node) catchUp(addrs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTimer(max(n.cfg.Memberlist.ProbeInterval, 100*time.Millisecond))
		defer t.Stop()
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if _, err := n.ml.Join(addrs); err != nil {
			n.cfg.Logger.Debug("cluster: exchange after the join", "err", err)
		}
	}()
}

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Self is this node's metadata.
func (n *Node) Self() Meta { return n.self }

// GossipAddr is the address other nodes join through.
func (n *Node) GossipAddr() string { return n.gossipAddr }

// RPC is the node's peer RPC, for other packages to register handlers and
// call peers by name.
func (n *Node) RPC() *rpc.Node { return n.rpc }

// Refusals counts the peer traffic this node refused, by listener and
// reason (Config.Refusals): shoal_peer_refused_total.
func (n *Node) Refusals() *tlsutil.Refusals { return n.cfg.Refusals }

// Failures is how many times this node saw a member fail (declared dead
// by the failure detector, not left).
func (n *Node) Failures() uint64 { return n.failures.Load() }

// Encrypted reports whether the node's gossip is encrypted.
func (n *Node) Encrypted() bool { return n.keyring != nil }

// rpcAddrsOf is the remote addresses of the peer RPC connections that
// named themselves name, for logs.
func (n *Node) rpcAddrsOf(name string) string {
	return strings.Join(n.rpc.ConnAddrs(name), ",")
}

// Bus is the node's broadcast bus.
func (n *Node) Bus() *Bus { return n.bus }

// Members returns every member this node knows of, itself included, sorted
// by name: alive and suspect members as memberlist sees them now, and
// failed or departed ones as last seen.
func (n *Node) Members() []Member {
	live := map[string]memberlist.NodeStateType{}
	for _, m := range n.ml.Members() {
		live[m.Name] = m.State
	}
	n.mu.Lock()
	out := make([]Member, 0, len(n.members)+1)
	for _, m := range n.members {
		c := *m
		if st, ok := live[c.Name]; ok && st == memberlist.StateSuspect && c.State == StateAlive {
			c.State = StateSuspect
		}
		out = append(out, c)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Member returns the named member as this node last saw it.
func (n *Node) Member(name string) (Member, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.members[name]; m != nil {
		return *m, true
	}
	return Member{}, false
}

// peerNames lists the alive members other than this node.
func (n *Node) peerNames() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.members))
	for name, m := range n.members {
		if name != n.cfg.Name && m.State == StateAlive {
			out = append(out, name)
		}
	}
	return out
}

// busMember reports whether name is an alive member other than this
// node, with the incarnation of its metadata.
func (n *Node) busMember(name string) (uint64, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.members[name]; m != nil && name != n.cfg.Name && m.State == StateAlive {
		return m.Incarnation, true
	}
	return 0, false
}

func (n *Node) resolveRPC(name string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.members[name]; m != nil && m.RPC != "" {
		return m.RPC, true
	}
	return "", false
}

// AdmitPeer reports whether the named node is an alive (or suspect)
// member, waiting until ctx ends for it to become one: a node whose join
// is in progress may reach this node before the news of its join does.
func (n *Node) AdmitPeer(ctx context.Context, name string) error {
	var t *time.Ticker
	for {
		n.mu.Lock()
		m := n.members[name]
		state := MemberState("unknown")
		if m != nil {
			state = m.State
		}
		closed := n.closed
		n.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case name != n.cfg.Name && state == StateAlive:
			return nil
		}
		if t == nil {
			t = time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not a member of this cluster (%s here)", state)
		case <-t.C:
		}
	}
}

// Subscribe returns a subscription to membership events from now on. Close
// it when done; Close of the node closes it too.
func (n *Node) Subscribe() *Subscription {
	s := newSubscription(n)
	n.mu.Lock()
	closed := n.closed
	if !closed {
		n.subs[s] = struct{}{}
	}
	n.mu.Unlock()
	if closed {
		s.Close()
	}
	return s
}

func (n *Node) unsubscribe(s *Subscription) {
	n.mu.Lock()
	delete(n.subs, s)
	n.mu.Unlock()
}

// UpdateMeta changes this node's metadata (for example once the raft
// address is known) and gossips it. RPC, CacheMode, Incarnation and TLS
// are kept.
func (n *Node) UpdateMeta(ctx context.Context, update func(*Meta)) error {
	m := n.self
	update(&m)
	m.RPC, m.CacheMode, m.Incarnation, m.TLS = n.self.RPC, n.self.CacheMode, n.self.Incarnation, n.self.TLS
	if _, err := m.encode(); err != nil {
		return err
	}
	n.mu.Lock()
	n.self = m
	n.mu.Unlock()
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return n.ml.UpdateNode(timeout)
}

// Close leaves the cluster gracefully (others see "left", not "failed"),
// then stops memberlist, the bus and the peer RPC, and closes
// subscriptions. It is safe to call twice; later calls return the first
// call's error.
func (n *Node) Close() error { return n.shutdown(true) }

// Kill stops the node abruptly, without leaving: other members see it
// fail. For tests and experiments.
func (n *Node) Kill() { n.shutdown(false) }

// rpcLeave tells peers that this node is leaving on purpose, so that they
// report "left" rather than "failed" when memberlist reports it gone:
// memberlist's event callbacks do not say which it was.
const rpcLeave = "cluster.leave"

func (n *Node) announceLeave() {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.LeaveTimeout/2)
	defer cancel()
	body := binary.BigEndian.AppendUint64(nil, n.self.Incarnation)
	var wg sync.WaitGroup
	for _, p := range n.peerNames() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.rpc.Call(ctx, p, rpcLeave, body); err != nil {
				n.cfg.Logger.Debug("cluster: leave notice not acknowledged", "peer", p, "err", err)
			}
		}()
	}
	wg.Wait()
}

func (n *Node) onLeaveNotice(_ context.Context, from string, body []byte) ([]byte, error) {
	if len(body) != 8 {
		return nil, fmt.Errorf("leave notice of %d bytes, want 8", len(body))
	}
	if _, ok := n.busMember(from); !ok {
		// Only members' notices are kept: the map must not grow with
		// names that some peer made up.
		n.refusals.refuse(ListenerRPC, ReasonNotMember, n.rpcAddrsOf(from), from, "a leave notice from a node that is not a current member")
		return nil, errors.New("not a current member")
	}
	n.mu.Lock()
	n.leaving[from] = binary.BigEndian.Uint64(body)
	n.mu.Unlock()
	return nil, nil
}

func (n *Node) shutdown(leave bool) error {
	n.closeOnce.Do(func() {
		var errs []error
		if leave {
			n.announceLeave()
			errs = append(errs, n.ml.Leave(n.cfg.LeaveTimeout))
		}
		errs = append(errs, n.ml.Shutdown())
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		close(n.stop)
		n.wg.Wait()
		n.mu.Lock()
		n.closed = true
		subs := make([]*Subscription, 0, len(n.subs))
		for s := range n.subs {
			subs = append(subs, s)
		}
		n.mu.Unlock()
		n.bus.close()
		errs = append(errs, n.rpc.Close())
		for _, s := range subs {
			s.Close()
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}
