package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// Cache modes a node can run in. The cluster runs one at a time, kept in
// the consistent store and switched live (l2cache.ModeKeeper); a node's
// own setting is the mode it proposes when the cluster has none yet.
const (
	CacheModeLocal       = "local"
	CacheModeDistributed = "distributed"
	CacheModeNear        = "near"
)

// Config configures a Node. Start from DefaultLANConfig or
// DefaultLoopbackConfig and set at least Name; validate fills the rest.
type Config struct {
	// Name is this node's unique name in the cluster (1-64 bytes).
	Name string

	// BindAddr is the gossip address, "host:port", UDP and TCP
	// (port 0 picks a free one). Ignored when Transport is set.
	BindAddr string
	// AdvertiseAddr is the gossip address other nodes use, if it differs
	// from BindAddr (NAT, 0.0.0.0 binds).
	AdvertiseAddr string
	// RPCAddr is where the peer RPC listens, "host:port".
	RPCAddr string
	// HTTPAddr and RaftAddr are advertised in the node's metadata for
	// other parts and operators; the cluster package does not serve them.
	HTTPAddr, RaftAddr string
	// RESPAddr is where the node serves the Redis protocol, advertised
	// for CLUSTER SLOTS and MOVED ("" if it does not).
	RESPAddr string
	// CacheMode is CacheModeLocal, CacheModeDistributed or CacheModeNear:
	// the mode this node started with, advertised in its metadata (the
	// cluster's mode is l2cache's, in the consistent store).
	CacheMode string
	// Version is the build version, advertised in metadata.
	Version string

	// GossipKey, if set, encrypts gossip (memberlist's keyring, AES-GCM):
	// 16, 24 or 32 bytes (AES-128, -192, -256). A node without one of the
	// cluster's keys can then neither join nor be joined: unencrypted
	// traffic is refused both ways. See Node.Keyring for rotation.
	GossipKey []byte
	// KeyringFile, if set, keeps the keyring across restarts (JSON, mode
	// 0600): written at start from GossipKey when it does not exist, and
	// at every change by Node.Keyring. When it exists it wins over
	// GossipKey, and it turns encryption on by itself.
	KeyringFile string

	// Refusals counts the peer traffic the node refuses, by listener and
	// reason (shoal_peer_refused_total); shared with the other listeners
	// of the process (raft). Nil: Start makes one.
	Refusals *tlsutil.Refusals

	// Memberlist holds gossip tuning (probe, suspicion, gossip and
	// push/pull intervals). Its identity, address, transport, delegates and
	// logger are set by Start and need not be filled. The presets below
	// explain the choices.
	Memberlist *memberlist.Config

	// GapTimeout is how long the bus waits for a missing message before it
	// tells subscribers that they may have missed it. Messages behind a
	// gap are held back, so this is also the longest that reordering can
	// delay a delivery. Latest sequence numbers are compared at every
	// memberlist push/pull (Memberlist.PushPullInterval), which bounds how
	// long a lost *last* message goes unnoticed.
	GapTimeout time.Duration
	// LeaveTimeout bounds the graceful leave broadcast in Close.
	LeaveTimeout time.Duration
	// DialTimeout bounds opening a peer RPC connection: the dial and the
	// exchange of hello frames, which needs the peer's accepting goroutine
	// to run. One-way messages (the bus's) queued for a peer while it is
	// dialed are dropped if the dial fails, so on a loaded machine this
	// must cover a process's scheduling stalls. Default 2 s (LAN), 5 s in
	// the loopback preset.
	DialTimeout time.Duration
	// ReconnectInterval is how often the node tries to rejoin one member
	// it saw fail (so that the halves of a healed partition merge), for
	// ReconnectTimeout after the failure.
	ReconnectInterval, ReconnectTimeout time.Duration
	// DepartedRetention is how long the record of a member that failed or
	// left is kept (Members lists it, Member finds it) after its
	// departure; default ReconnectTimeout, and never less (a failed
	// member is retried that long). MaxDeparted bounds how many such
	// records are kept at once (default 1,000): past it the longest
	// departed go first. Members that come and go under new names (a
	// node per deployment, a restarted container) would otherwise grow
	// the record for ever.
	DepartedRetention time.Duration
	MaxDeparted       int

	// Logger receives structured logs; memberlist's own log lines are
	// routed into it. Default: slog.Default().
	Logger *slog.Logger

	// Transport replaces memberlist's UDP/TCP transport (tests use
	// memnet). Nil: memberlist's NetTransport on BindAddr.
	Transport memberlist.Transport
	// Network carries the peer RPC. Nil: TCP.
	Network wire.Network
	// Now is the bus's clock (default time.Now).
	Now func() time.Time

	// LookupHost resolves the host names of Join's seed addresses, again
	// at every attempt (nil: net.DefaultResolver.LookupHost). Tests set it
	// to a resolver whose answers they change.
	LookupHost func(ctx context.Context, host string) ([]string, error)

	// TLS, if set, runs the peer RPC over mutual TLS 1.3 with its
	// certificates, which must name this node: a peer must present a
	// certificate of the same CA, its name is the one in its certificate
	// (a hello that claims another is refused), and only a member, or a
	// node whose join reaches this node within half the RPC's dial
	// timeout, is admitted. Network must then be a *wire.TCP (or nil).
	TLS *tlsutil.Reloader
}

// DefaultLANConfig suits nodes on a local network: memberlist's LAN
// defaults (1 s probes, suspicion 4·log10(N)·1 s, push/pull every 30 s, so
// a dead node is marked failed within roughly 5-6 s) and a bus gap timeout
// of 2 s. Gossip is not compressed: memberlist builds a new LZW writer
// for every packet and keeps the result only if it is smaller, which for
// gossip's small packets it seldom is; an idle follower spent 6-10 % less
// CPU without it (BENCHMARKS.md, "The LAN preset's empty appends"). A
// node still reads compressed packets from one that compresses.
func DefaultLANConfig() *Config {
	ml := memberlist.DefaultLANConfig()
	// A node restarted under the same name at a new address may reclaim it
	// once the old one has been dead this long.
	ml.DeadNodeReclaimTime = 30 * time.Second
	ml.EnableCompression = false // see above
	return &Config{
		BindAddr:     "0.0.0.0:7946",
		RPCAddr:      "0.0.0.0:7947",
		CacheMode:    CacheModeLocal,
		Memberlist:   ml,
		GapTimeout:   2 * time.Second,
		LeaveTimeout: 5 * time.Second,
		DialTimeout:  2 * time.Second,
		// As Serf (Consul): retry failed members for a day.
		ReconnectInterval: 10 * time.Second,
		ReconnectTimeout:  24 * time.Hour,
	}
}

// loopbackPacketSize bounds a gossip packet on loopback, which carries
// 64 KiB datagrams without fragmenting them: memberlist packs as many
// queued changes into a packet as fit, and with its LAN figure (1,400
// bytes, a network's MTU: about seven joins with shoal's metadata) the
// joins of 64 nodes at once took seconds of gossip rounds to spread.
const loopbackPacketSize = 16 << 10

// DefaultLoopbackConfig suits nodes on one machine ('shoal up', tests).
// Round trips are microseconds, but the machine is shared, so what it
// assumes is a pause budget rather than a network: a node may go
// unscheduled for a few hundred milliseconds (a loaded 2-core laptop or
// CI runner) without being declared failed.
//
// Probes every 500 ms with a 250 ms timeout (then indirect probes through
// the other members and a TCP fallback within the interval) and a
// suspicion multiplier of 3 (suspicion lasts 1.5 s on a small cluster,
// during which a slow node refutes it) mark a killed node failed in about
// 2-3 s, while a node must miss about 2 s of probes to be declared failed
// wrongly. The earlier 200 ms/100 ms probes sat too close to a loaded
// machine's stalls. Gossip every 200 ms (memberlist's LAN figure) to 3
// members spreads a change within a few hundred milliseconds; a round
// wakes the node even when there is nothing to send, and every 100 ms
// cost an idle node five wake-ups a second more while 32 and 64 nodes
// converged no faster (BENCHMARKS.md, "Gossip every 200 ms"); push/pull
// every 5 s exchanges bus sequence numbers, so a lost last message is
// noticed within 5-10 s (a push/pull, a TCP exchange of the whole state,
// was a tenth of an idle node's CPU every 2 s). No
// compression: bytes on loopback cost nothing. Each gossiped change is
// retransmitted 4·log10(N+1) times (memberlist's LAN figure; its local
// preset's 2 left one node of 32 a change short until the next push/pull,
// 8 s after the last join against under 1 s with 4). A peer RPC connection
// may take 5 s to open (its hello needs the peer's goroutine to run; the
// bus messages queued meanwhile are dropped if it fails). Gossip packets
// carry up to 16 KiB of changes (loopbackPacketSize). Port 0 everywhere:
// the OS picks. Across machines use DefaultLANConfig.
func DefaultLoopbackConfig() *Config {
	ml := memberlist.DefaultLocalConfig()
	ml.ProbeInterval = 500 * time.Millisecond
	ml.ProbeTimeout = 250 * time.Millisecond
	ml.SuspicionMult = 3
	ml.RetransmitMult = 4
	ml.GossipInterval = 200 * time.Millisecond
	ml.PushPullInterval = 5 * time.Second
	ml.TCPTimeout = time.Second
	ml.DeadNodeReclaimTime = time.Second
	ml.GossipToTheDeadTime = 5 * time.Second
	ml.EnableCompression = false // a fresh LZW writer per message was a tenth of an idle node's CPU
	ml.UDPBufferSize = loopbackPacketSize
	return &Config{
		BindAddr:          "127.0.0.1:0",
		RPCAddr:           "127.0.0.1:0",
		CacheMode:         CacheModeLocal,
		Memberlist:        ml,
		GapTimeout:        500 * time.Millisecond,
		LeaveTimeout:      2 * time.Second,
		DialTimeout:       5 * time.Second,
		ReconnectInterval: time.Second,
		ReconnectTimeout:  time.Hour,
	}
}

// Validate fills defaults and rejects nonsense: a refused setting is a
// *config.FieldError naming it. It does not modify c.Memberlist; Start
// works on a copy.
func (c *Config) Validate() error {
	if c.Name == "" || len(c.Name) > 64 || !utf8.ValidString(c.Name) {
		return config.Invalid("cluster", "Name", c.Name, "a node name of 1-64 bytes of UTF-8")
	}
	switch c.CacheMode {
	case "":
		c.CacheMode = CacheModeLocal
	case CacheModeLocal, CacheModeDistributed, CacheModeNear:
	default:
		return config.Invalid("cluster", "CacheMode", c.CacheMode, CacheModeLocal+", "+CacheModeDistributed+" or "+CacheModeNear)
	}
	if len(c.GossipKey) > 0 {
		if err := checkGossipKey(c.GossipKey); err != nil {
			return config.Invalid("cluster", "GossipKey", fmt.Sprintf("(a key of %d bytes)", len(c.GossipKey)), "16, 24 or 32 bytes")
		}
	}
	if c.Memberlist == nil {
		c.Memberlist = DefaultLANConfig().Memberlist
	}
	if c.Transport == nil {
		if c.BindAddr == "" {
			c.BindAddr = "0.0.0.0:7946"
		}
		if err := config.Addr("cluster", "BindAddr", c.BindAddr); err != nil {
			return err
		}
	}
	if c.AdvertiseAddr != "" {
		if err := config.Addr("cluster", "AdvertiseAddr", c.AdvertiseAddr); err != nil {
			return err
		}
	}
	if c.RPCAddr == "" {
		c.RPCAddr = "127.0.0.1:0"
	}
	if err := config.Addr("cluster", "RPCAddr", c.RPCAddr); err != nil {
		return err
	}
	if c.GapTimeout <= 0 {
		c.GapTimeout = 2 * time.Second
	}
	if c.LeaveTimeout <= 0 {
		c.LeaveTimeout = 5 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.ReconnectInterval <= 0 {
		c.ReconnectInterval = 10 * time.Second
	}
	if c.ReconnectTimeout <= 0 {
		c.ReconnectTimeout = 24 * time.Hour
	}
	if c.DepartedRetention < c.ReconnectTimeout {
		c.DepartedRetention = c.ReconnectTimeout
	}
	if c.MaxDeparted <= 0 {
		c.MaxDeparted = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Network == nil {
		c.Network = &wire.TCP{}
	}
	if c.TLS != nil {
		tcp, ok := c.Network.(*wire.TCP)
		if !ok {
			return config.Invalid("cluster", "Network", fmt.Sprintf("%T", c.Network), "a *wire.TCP: TLS runs over TCP")
		}
		if got := c.TLS.Name(); got != c.Name {
			return config.Invalid("cluster", "TLS", got, fmt.Sprintf("the certificate of this node, %q (it is %q's)", c.Name, got))
		}
		if tcp.TLS == nil {
			secured := *tcp
			secured.TLS = &wire.TLS{Server: c.TLS.ServerConfig(), Client: c.TLS.ClientConfig()}
			c.Network = &secured
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Refusals == nil {
		c.Refusals = &tlsutil.Refusals{}
	}
	return nil
}

// memberlistLogger routes memberlist's "[LEVEL] memberlist: ..." lines into
// slog at the matching level.
// Lines that say a peer's gossip was refused for its encryption are
// counted and logged as refusals (ListenerGossip) instead: memberlist has
// no other hook for them.
func memberlistLogger(l *slog.Logger, r *refusals) *log.Logger {
	return log.New(slogWriter{l, r}, "", 0)
}

type slogWriter struct {
	l *slog.Logger
	r *refusals
}

var logPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG] ", slog.LevelDebug}, {"[INFO] ", slog.LevelInfo},
	{"[WARN] ", slog.LevelWarn}, {"[ERR] ", slog.LevelError}, {"[ERROR] ", slog.LevelError},
}

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	if len(msg) > 0 && msg[len(msg)-1] == '\n' {
		msg = msg[:len(msg)-1]
	}
	level := slog.LevelInfo
	for _, p := range logPrefixes {
		if rest, ok := strings.CutPrefix(msg, p.prefix); ok {
			level, msg = p.level, rest
			break
		}
	}
	if reason := gossipRefusal(msg); w.r != nil && level == slog.LevelError && reason != "" {
		addr := ""
		if i := strings.LastIndex(msg, " from="); i >= 0 {
			addr = msg[i+len(" from="):]
		}
		w.r.refuse(ListenerGossip, reason, addr, "", msg)
		return len(p), nil
	}
	if level == slog.LevelError && strings.Contains(msg, "Failed fallback TCP ping") {
		// A peer that did not answer a probe in time: the failure
		// detector's input (suspicion follows), not a fault of this
		// node; memberlist says so at ERR, and a loaded machine's clean
		// stop logged it as an error (a peer leaving took its time).
		level = slog.LevelWarn
	}
	if level == slog.LevelError && strings.Contains(msg, "use of closed network connection") {
		// memberlist's gossip and probe timers can fire between its
		// transport's shutdown and their own: a send on the socket this
		// process has just closed is routine at shutdown, not an error.
		level = slog.LevelDebug
	}
	w.l.Log(nil, level, msg, "component", "memberlist")
	return len(p), nil
}

var _ io.Writer = slogWriter{}

// gossipRefusal is the reason of a memberlist error line that refuses a
// packet or stream for its encryption, "" for other lines: none of the
// keys opens it, it is not encrypted, or it is and this node has no key.
func gossipRefusal(msg string) string {
	for _, c := range []struct{ text, reason string }{
		{"Decrypt packet failed", ReasonUnknownKey},
		{"no installed keys could decrypt", ReasonUnknownKey},
		{"remote state is not encrypted", ReasonNotEncrypted},
		{"remote state is encrypted and encryption is not configured", ReasonNoKeyHere},
	} {
		if strings.Contains(msg, c.text) {
			return c.reason
		}
	}
	return ""
}
