package resp

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

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/dmap"
	"github.com/shoal-dev/shoal/internal/config"
)

// Redirect policies: which connections are answered MOVED (and CROSSSLOT)
// rather than served by forwarding.
const (
	// RedirectAuto: connections in cluster mode — those that sent a
	// CLUSTER command, READONLY or READWRITE, as Redis Cluster clients do
	// to learn the slot map — are redirected; the others are served by
	// forwarding.
	RedirectAuto = "auto"
	// RedirectAlways: every connection, as a Redis Cluster node does
	// (for `redis-cli -c`, which asks for nothing before its first key).
	RedirectAlways = "always"
	// RedirectNever: every connection is served by forwarding.
	RedirectNever = "never"
)

// Principal is who a connection authenticated as.
type Principal struct {
	Name  string
	Admin bool
}

// ErrBadCredentials is what an Authenticator answers for a wrong user,
// password or token.
var ErrBadCredentials = errors.New("bad credentials")

// ErrAuthBusy is what an Authenticator answers when it cannot check a
// password now (too many checks at once).
var ErrAuthBusy = errors.New("authentication busy")

// Authenticator checks AUTH's and HELLO AUTH's credentials: the node's
// users, passwords and tokens.
type Authenticator interface {
	Password(ctx context.Context, user, password string) (Principal, error)
	Token(ctx context.Context, token string) (Principal, error)
}

// Config configures a Server.
type Config struct {
	// Addr is where to listen, "host:port"; empty: the server is off.
	// Listener, if set, is used instead (the node opens it before it
	// joins, to advertise its address).
	Addr     string
	Listener net.Listener
	// Map is the node's part of the named maps.
	Map *dmap.DMap
	// Node is the cluster member: the members' RESP addresses (for
	// CLUSTER SLOTS and MOVED) and the bus (PUBLISH).
	Node *cluster.Node
	// Auth checks credentials. Nil: only anonymous access.
	Auth Authenticator
	// Anonymous lets a connection run commands without AUTH (as a user
	// who is not an administrator). Off by default.
	Anonymous bool
	// Redirect is RedirectAuto (default), RedirectAlways or RedirectNever.
	Redirect string
	// Timeout bounds a command at the owners (default 5 s).
	Timeout time.Duration
	// MaxClients bounds the open connections (default 10,000); past it a
	// new connection is told so and closed.
	MaxClients int
	// MaxCommandBytes bounds one command as it is read (default 512 MiB,
	// Redis's largest bulk string); a longer one closes the connection.
	MaxCommandBytes int64
	// WriteTimeout bounds writing replies to a client that does not read
	// them (default 30 s); then the connection is closed.
	WriteTimeout time.Duration
	// Version is shoal's version, shown by INFO and HELLO.
	Version string
	Logger  *slog.Logger
}

// DefaultConfig is the RESP endpoint's default configuration: off.
func DefaultConfig() Config { return Config{Redirect: RedirectAuto} }

// Validate fills the defaults and refuses nonsense (a *config.FieldError).
func (c *Config) Validate() error {
	if c.Addr != "" {
		if err := config.Addr("resp", "Addr", c.Addr); err != nil {
			return err
		}
	}
	switch c.Redirect {
	case "":
		c.Redirect = RedirectAuto
	case RedirectAuto, RedirectAlways, RedirectNever:
	default:
		return config.Invalid("resp", "Redirect", c.Redirect, "auto, always or never")
	}
	if c.Timeout < 0 || c.MaxClients < 0 || c.MaxCommandBytes < 0 || c.WriteTimeout < 0 {
		return config.Invalid("resp", "Timeout", c.Timeout, "limits of at least 0 (0: the default)")
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MaxClients == 0 {
		c.MaxClients = 10000
	}
	if c.MaxCommandBytes == 0 {
		c.MaxCommandBytes = 512 << 20
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server serves the Redis protocol on one listener.
type Server struct {
	cfg   Config
	ln    net.Listener
	m     *dmap.DMap
	self  string
	ctx   context.Context
	stop  context.CancelFunc
	start time.Time

	mu     sync.Mutex
	conns  map[*conn]struct{}
	ids    map[int64]*conn
	closed bool
	wg     sync.WaitGroup
	once   sync.Once

	nextID                     atomic.Int64
	accepted, rejected, totCmd atomic.Uint64
	// trackResets counts tracking connections told to drop keys no write
	// changed (everything, at a lease lapse or reset; a partition's keys,
	// when it changes owner); pushKills, connections closed because a
	// push (an invalidation or a message) could not be written in time.
	trackResets, pushKills atomic.Uint64
	stats                  *cmdStats
	nodeIDs                sync.Map // member name → CLUSTER node ID
	track                  *tracker
	ps                     *pubsub
}

// Start listens (or takes cfg.Listener) and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Map == nil {
		return nil, errors.New("resp: Config.Map is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln := cfg.Listener
	if ln == nil {
		if cfg.Addr == "" {
			return nil, errors.New("resp: no address")
		}
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("resp listen on %s: %w", cfg.Addr, err)
		}
	}
	s := &Server{cfg: cfg, ln: ln, m: cfg.Map, self: cfg.Map.Self(), conns: map[*conn]struct{}{}, ids: map[int64]*conn{},
		start: time.Now(), stats: newCmdStats()}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.track = newTracker(s)
	s.ps = newPubsub(s)
	if err := s.ps.start(); err != nil {
		ln.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening, closes every connection and waits for their
// goroutines. Safe to call twice.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		err = s.ln.Close()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		s.stop()
		s.ps.close()
	})
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			s.cfg.Logger.Warn("resp: accept", "err", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if len(s.conns) >= s.cfg.MaxClients {
			s.mu.Unlock()
			s.rejected.Add(1)
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(nc, "-ERR max number of clients reached\r\n")
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.ids[c.id] = c
		s.wg.Add(1)
		s.mu.Unlock()
		s.accepted.Add(1)
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			delete(s.ids, c.id)
			s.mu.Unlock()
		}()
	}
}

// byID is the open connection with that ID, or nil.
func (s *Server) byID(id int64) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id]
}

// clients returns the open connections.
func (s *Server) clients() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Invalidate is the map's OnInvalidate: what clients of this node may
// have cached from partition p (keys, or all of p, or everything when
// p < 0) is no longer current. It returns once each tracking connection
// was told or closed.
func (s *Server) Invalidate(p int, keys []string) { s.track.invalidate(p, keys) }
