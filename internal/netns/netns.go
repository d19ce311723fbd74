// Package netns builds small virtual networks out of Linux network
// namespaces, so that tests and experiments can run each node of a cluster
// on its own network stack, with its own address, and cut the links
// between groups of them.
//
// # Layout
//
// A Net is one IPv4 /24 on a bridge. The bridge lives in a namespace of
// its own (the hub), not in the caller's, so that no packet filter of the
// caller's namespace (a container runtime's FORWARD policy, say) sees the
// bridged traffic. Each Host is a namespace with one veth whose other end
// is a port of the bridge; the caller's namespace has one more veth to the
// bridge, the uplink, holding the subnet's last address (.254), so the
// process that built the Net reaches every host directly (and, since
// partitions filter only traffic between hosts, always).
//
// # Partitions
//
// The kernel may lack netem, so faults are packet filters: nftables rules
// inside the hosts' namespaces (table inet shoal_partition) that drop
// traffic from and to chosen addresses. Partition cuts groups apart both
// ways; Block drops one direction only; Heal removes every rule.
//
// # Names and leftovers
//
// Everything a Net creates is named after its owner's process ID and a
// per-process counter: namespaces "shoalnet-PID-N-hub" and
// "shoalnet-PID-N-NAME", the uplink "snPID-N" in the caller's namespace
// (PID and N in base 36, to fit the kernel's 15-byte interface names).
// Close removes them. New first removes what earlier processes left
// behind (a run that crashed or was SIGKILLed) — only namespaces and
// links whose owner process no longer exists, so concurrent runs in other
// processes are left alone.
//
// Requires root, iproute2 ('ip') and nftables ('nft'); Available says
// whether this machine has them.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrUnavailable says this machine cannot build namespaces: not root, or
// 'ip' or 'nft' missing. Errors from Available and New wrap it.
var ErrUnavailable = errors.New("netns: network namespaces unavailable")

// ErrClosed is returned by the methods of a closed Net.
var ErrClosed = errors.New("netns: closed")

// nsPrefix starts every namespace name this package creates.
const nsPrefix = "shoalnet-"

// Available reports, as an error wrapping ErrUnavailable, why this machine
// cannot build a Net, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrUnavailable)
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found (Debian: apt-get install iproute2 nftables)", ErrUnavailable, tool)
		}
	}
	return nil
}

// Config says how to build a Net.
type Config struct {
	// Subnet is the Net's IPv4 /24 (its .1 to .253 go to hosts, .254 to
	// the uplink). Zero: the first free one of 10.213.0.0/16's /24s.
	Subnet netip.Prefix
	// Timeout bounds each 'ip' and 'nft' command (default 10 s).
	Timeout time.Duration
}

func (c *Config) validate() error {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Subnet.IsValid() && (!c.Subnet.Addr().Is4() || c.Subnet.Bits() != 24) {
		return fmt.Errorf("netns: subnet %v: want an IPv4 /24", c.Subnet)
	}
	return nil
}

// Net is one bridged subnet of host namespaces. Its methods are safe for
// concurrent use.
type Net struct {
	cfg    Config
	id     string // "PID-N" in base 36, unique on the machine while we live
	hub    string // the hub namespace
	uplink string // the uplink's name in the caller's namespace
	subnet netip.Prefix

	mu     sync.Mutex
	hosts  []*Host
	cmds   []*exec.Cmd // made by Host.Command: Close kills those started
	closed bool
}

// Host is one namespace of a Net.
type Host struct {
	// Name is the name given to AddHost; NS the namespace's name.
	Name, NS string
	// Addr is the host's address on the Net.
	Addr netip.Addr
	net  *Net
}

var counter atomic.Uint64

// New builds an empty Net: the hub namespace, its bridge and the uplink.
// It first removes leftovers of dead processes (see the package comment).
// On error nothing of it is left.
func New(ctx context.Context, cfg Config) (*Net, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := CleanupLeftovers(ctx); err != nil {
		return nil, err
	}
	pid := strconv.FormatInt(int64(os.Getpid()), 36)
	n := strconv.FormatUint(counter.Add(1), 36)
	nt := &Net{cfg: cfg, id: pid + "-" + n, uplink: "sn" + pid + "-" + n}
	if len(nt.uplink) > 15 {
		return nil, fmt.Errorf("netns: interface name %q too long", nt.uplink)
	}
	nt.hub = nsPrefix + nt.id + "-hub"
	subnet := cfg.Subnet
	if !subnet.IsValid() {
		var err error
		if subnet, err = freeSubnet(ctx, cfg.Timeout); err != nil {
			return nil, err
		}
	}
	nt.subnet = subnet
	if err := nt.build(ctx); err != nil {
		nt.teardown()
		return nil, err
	}
	return nt, nil
}

func (nt *Net) build(ctx context.Context) error {
	up := nt.addr(254)
	steps := [][]string{
		{"netns", "add", nt.hub},
		{"-n", nt.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", nt.hub, "link", "set", "br0", "up"},
		{"link", "add", nt.uplink, "type", "veth", "peer", "name", "up0", "netns", nt.hub},
		{"-n", nt.hub, "link", "set", "up0", "master", "br0", "up"},
		{"addr", "add", netip.PrefixFrom(up, 24).String(), "dev", nt.uplink},
		{"link", "set", nt.uplink, "up"},
	}
	for _, s := range steps {
		if err := nt.ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// Subnet is the Net's /24.
func (nt *Net) Subnet() netip.Prefix { return nt.subnet }

// Gateway is the caller's own address on the Net (the uplink's).
func (nt *Net) Gateway() netip.Addr { return nt.addr(254) }

func (nt *Net) addr(i int) netip.Addr {
	b := nt.subnet.Addr().As4()
	b[3] = byte(i)
	return netip.AddrFrom4(b)
}

// AddHost creates a namespace with loopback up and one interface, eth0,
// on the bridge, holding the next free address (.1, .2, ...). name must
// be short and plain (letters, digits, '-').
func (nt *Net) AddHost(ctx context.Context, name string) (*Host, error) {
	if !plainName(name) {
		return nil, fmt.Errorf("netns: host name %q: want 1-20 letters, digits or '-'", name)
	}
	nt.mu.Lock()
	if nt.closed {
		nt.mu.Unlock()
		return nil, ErrClosed
	}
	i := len(nt.hosts) + 1
	if i > 253 {
		nt.mu.Unlock()
		return nil, errors.New("netns: the subnet is full")
	}
	for _, h := range nt.hosts {
		if h.Name == name {
			nt.mu.Unlock()
			return nil, fmt.Errorf("netns: host %q exists", name)
		}
	}
	h := &Host{Name: name, NS: nsPrefix + nt.id + "-" + name, Addr: nt.addr(i), net: nt}
	nt.hosts = append(nt.hosts, h) // reserved; Close removes it even if the steps below fail
	nt.mu.Unlock()
	port := nt.uplink + "h" + strconv.Itoa(i) // in the caller's namespace only until moved to the hub
	steps := [][]string{
		{"netns", "add", h.NS},
		{"link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"link", "set", port, "netns", nt.hub},
		{"-n", nt.hub, "link", "set", port, "master", "br0", "up"},
		{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr, 24).String(), "dev", "eth0"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
		{"-n", h.NS, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := nt.ip(ctx, s...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func plainName(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Hosts lists the Net's hosts in the order they were added.
func (nt *Net) Hosts() []*Host {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	return append([]*Host(nil), nt.hosts...)
}

// Command returns a command that runs name with args inside the host's
// namespace ('ip netns exec', which execs the program: the process ID is
// the program's, so signals reach it directly).
//
// Close kills the command if it was started, by its process ID: between
// Start and 'ip' entering the namespace, the namespace does not list the
// process yet, and a process that enters it after Close looked would
// outlive the Net.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return h.net.track(exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...))
}

// CommandContext is Command with a context that kills the process.
func (h *Host) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return h.net.track(exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...))
}

func (nt *Net) track(cmd *exec.Cmd) *exec.Cmd {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.cmds = append(nt.cmds, cmd)
	return cmd
}

// Partition cuts the given groups apart: a host of one group can no
// longer exchange packets with a host of another. Hosts in no group keep
// talking to everyone. It adds to what earlier calls cut; Heal undoes all.
func (nt *Net) Partition(ctx context.Context, groups ...[]*Host) error {
	for gi, g := range groups {
		for gj, other := range groups {
			if gi != gj {
				if err := nt.Block(ctx, g, other); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Block drops every packet from a host of from to a host of to (one way:
// to's packets to from still pass, though a TCP connection needs both).
// The rule sits in both namespaces: on the way out of from and on the way
// into to.
func (nt *Net) Block(ctx context.Context, from, to []*Host) error {
	if err := nt.checkOpen(); err != nil {
		return err
	}
	for _, f := range from {
		for _, t := range to {
			if f == t {
				continue
			}
			if err := nt.nft(ctx, f, "add rule inet shoal_partition out ip daddr "+t.Addr.String()+" drop"); err != nil {
				return err
			}
			if err := nt.nft(ctx, t, "add rule inet shoal_partition in ip saddr "+f.Addr.String()+" drop"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition rule from every host.
func (nt *Net) Heal(ctx context.Context) error {
	if err := nt.checkOpen(); err != nil {
		return err
	}
	var errs []error
	for _, h := range nt.Hosts() {
		errs = append(errs, nt.nft(ctx, h, "flush table inet shoal_partition"))
	}
	return errors.Join(errs...)
}

// nft runs an nft command in h's namespace, creating the partition table
// and its chains first (nft's "add" of what exists changes nothing).
func (nt *Net) nft(ctx context.Context, h *Host, command string) error {
	script := "add table inet shoal_partition\n" +
		"add chain inet shoal_partition in { type filter hook input priority 0; policy accept; }\n" +
		"add chain inet shoal_partition out { type filter hook output priority 0; policy accept; }\n" +
		command + "\n"
	return nt.runIn(ctx, strings.NewReader(script), "ip", "netns", "exec", h.NS, "nft", "-f", "-")
}

func (nt *Net) checkOpen() error {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.closed {
		return ErrClosed
	}
	return nil
}

// Close kills (SIGKILL) the processes still running inside the hosts'
// namespaces — the caller started them there, through Host.Command — and
// removes the hosts' namespaces, the hub and the uplink. Stop what should
// stop gracefully before. Safe to call twice.
func (nt *Net) Close() error {
	nt.mu.Lock()
	if nt.closed {
		nt.mu.Unlock()
		return nil
	}
	nt.closed = true
	nt.mu.Unlock()
	return nt.teardown()
}

func (nt *Net) teardown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	nt.mu.Lock()
	cmds := nt.cmds
	nt.cmds = nil
	nt.mu.Unlock()
	for _, c := range cmds {
		// Process is set by Start, which the caller ran before Close if
		// at all; Kill is safe on a process already waited for (it then
		// reports os.ErrProcessDone and signals nothing).
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	for _, h := range nt.Hosts() {
		errs = append(errs, killIn(ctx, h.NS), delNS(ctx, h.NS))
	}
	errs = append(errs, delNS(ctx, nt.hub)) // takes the bridge, its ports and the uplink's peer
	// The kernel dismantles a namespace in the background: the uplink
	// goes with its peer, a moment later.
	for deadline := time.Now().Add(10 * time.Second); linkExists(ctx, nt.uplink); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			if err := run(ctx, "ip", "link", "del", nt.uplink); err != nil && linkExists(ctx, nt.uplink) {
				errs = append(errs, err)
			}
			break
		}
	}
	return errors.Join(errs...)
}

// CleanupLeftovers removes the namespaces and uplinks this package
// created in processes that no longer exist, first killing the processes
// still running inside those namespaces (a node or a database server an
// earlier run started there and did not stop because it crashed).
func CleanupLeftovers(ctx context.Context) error {
	if err := Available(); err != nil {
		return err
	}
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		if pid, ok := ownerPID(strings.TrimPrefix(f[0], nsPrefix)); ok && !alive(pid) {
			errs = append(errs, killIn(ctx, f[0]), delNS(ctx, f[0]))
		}
	}
	links, err := output(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, line := range strings.Split(links, "\n") {
		// "7: snPID-N@if6: <...>"
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		rest, ok := strings.CutPrefix(name, "sn")
		if !ok {
			continue
		}
		if pid, ok := ownerPID(rest); ok && !alive(pid) && linkExists(ctx, name) {
			errs = append(errs, run(ctx, "ip", "link", "del", name))
		}
	}
	return errors.Join(errs...)
}

// ownerPID reads the PID from "PID-N-rest" (base 36).
func ownerPID(s string) (int, bool) {
	p, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.ParseInt(p, 36, 64)
	return int(pid), err == nil && pid > 0
}

// alive reports whether a process with this ID exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// freeSubnet picks the first /24 of 10.213.0.0/16 that no address or
// route of the caller's namespace overlaps.
func freeSubnet(ctx context.Context, timeout time.Duration) (netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := output(ctx, "ip", "-4", "-o", "addr", "show")
	if err != nil {
		return netip.Prefix{}, err
	}
	routes, err := output(ctx, "ip", "-4", "route", "show", "table", "all")
	if err != nil {
		return netip.Prefix{}, err
	}
	var used []netip.Prefix
	for _, f := range strings.Fields(addrs + " " + routes) {
		if p, err := netip.ParsePrefix(f); err == nil {
			used = append(used, p.Masked())
		} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
			used = append(used, netip.PrefixFrom(a, 32))
		}
	}
	for third := 0; third < 256; third++ {
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(third), 0}), 24)
		free := true
		for _, u := range used {
			if u.Bits() > 0 && u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, errors.New("netns: no free /24 in 10.213.0.0/16")
}

func (nt *Net) ip(ctx context.Context, args ...string) error {
	return nt.runIn(ctx, nil, "ip", args...)
}

// runIn runs a command with stdin, bounded by Config.Timeout.
func (nt *Net) runIn(ctx context.Context, stdin io.Reader, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, nt.cfg.Timeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin, cmd.Stderr = stdin, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func delNS(ctx context.Context, ns string) error {
	err := run(ctx, "ip", "netns", "del", ns)
	if err != nil && !nsExists(ctx, ns) {
		return nil // already gone (or never made)
	}
	return err
}

// killIn SIGKILLs the processes inside namespace ns ('ip netns pids')
// and waits, up to 10 s, until none is left.
func killIn(ctx context.Context, ns string) error {
	if !nsExists(ctx, ns) {
		return nil
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, err := output(ctx, "ip", "netns", "pids", ns)
		if err != nil {
			return err
		}
		pids := strings.Fields(out)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: processes %s in %s survived SIGKILL", strings.Join(pids, " "), ns)
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func nsExists(ctx context.Context, ns string) bool {
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == ns {
			return true
		}
	}
	return false
}

func linkExists(ctx context.Context, name string) bool {
	return exec.CommandContext(ctx, "ip", "link", "show", name).Run() == nil
}

// Owned lists the namespaces and links in the caller's namespace that
// this process's Nets created and that still exist: empty once every Net
// is closed (a test checks its cleanup with it).
func Owned(ctx context.Context) ([]string, error) {
	me := strconv.FormatInt(int64(os.Getpid()), 36) + "-"
	var out []string
	nss, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(nss, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix+me) {
			out = append(out, "namespace "+f[0])
		}
	}
	links, err := output(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(links, "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, "sn"+me) {
				out = append(out, "link "+name)
			}
		}
	}
	return out, nil
}
