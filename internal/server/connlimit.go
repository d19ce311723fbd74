package server

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/config"
)

// HTTPConfig bounds the node's HTTP connections, so that slow or idle
// clients cost connections for a bounded time and never a pool slot.
type HTTPConfig struct {
	// ReadHeaderTimeout is how long a request's headers may take; default
	// 10 s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long; default
	// 2 minutes.
	IdleTimeout time.Duration
	// MaxConnsPerClient bounds the open connections from one client
	// address (IP); a connection over it is closed as soon as it is
	// accepted. Default 256; negative for no bound.
	MaxConnsPerClient int
	// Body is what a request body must keep up (a minimum rate after a
	// grace period, else 408) and which bodies are read before the pool.
	Body gitfront.BodyConfig
	// TLS, if set, serves HTTPS instead of HTTP.
	TLS HTTPTLS
	// Logins bounds password guessing: failed authentications per client
	// address, per username and address, per username (429 with
	// Retry-After past them).
	Logins gitfront.LoginLimits
	// MetricsAuth makes /metrics require a user's credentials (an access
	// token as a Bearer token, for a Prometheus scraper); it is open by
	// default, like /healthz and /readyz.
	MetricsAuth bool
}

// DefaultHTTPConfig is HTTPConfig's defaults.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxConnsPerClient: 256, Body: gitfront.DefaultBody(), Logins: gitfront.DefaultLoginLimits()}
}

// Validate fills the zero fields from DefaultHTTPConfig.
func (c *HTTPConfig) Validate() error {
	d := DefaultHTTPConfig()
	switch {
	case c.ReadHeaderTimeout < 0:
		return config.Invalid("server", "ReadHeaderTimeout", c.ReadHeaderTimeout, "a duration of at least 0 (0: the default)")
	case c.IdleTimeout < 0:
		return config.Invalid("server", "IdleTimeout", c.IdleTimeout, "a duration of at least 0 (0: the default)")
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxConnsPerClient == 0 {
		c.MaxConnsPerClient = d.MaxConnsPerClient
	}
	if err := c.TLS.validate(); err != nil {
		return config.Within("TLS", err)
	}
	if err := c.Logins.Validate(); err != nil {
		return err
	}
	return c.Body.Validate()
}

// clientLimit is a listener that keeps at most max connections open per
// client IP, closing the excess at once.
type clientLimit struct {
	net.Listener
	max     int
	log     *slog.Logger
	refused atomic.Uint64

	mu    sync.Mutex
	conns map[string]int
}

func newClientLimit(ln net.Listener, max int, log *slog.Logger) net.Listener {
	if max < 0 {
		return ln
	}
	return &clientLimit{Listener: ln, max: max, log: log, conns: map[string]int{}}
}

func (l *clientLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := clientHost(c.RemoteAddr())
		l.mu.Lock()
		n := l.conns[host]
		if n >= l.max {
			l.mu.Unlock()
			if l.refused.Add(1)%100 == 1 {
				l.log.Warn("http: connection refused: too many from one client", "client", host, "max", l.max, "refused", l.refused.Load())
			}
			c.Close()
			continue
		}
		l.conns[host] = n + 1
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, host: host}, nil
	}
}

func (l *clientLimit) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[host] <= 1 {
		delete(l.conns, host)
		return
	}
	l.conns[host]--
}

func clientHost(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitedConn gives its slot back on Close (once) and keeps the
// connection's ReadFrom, so responses from files still go out with
// sendfile.
type limitedConn struct {
	net.Conn
	l    *clientLimit
	host string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.host) })
	return err
}

func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

type writerOnly struct{ io.Writer }
