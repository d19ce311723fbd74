package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/internal/beat"
)

// Config says where a node's TLS material is and how to watch it.
type Config struct {
	// CAFile holds the CA certificates a peer's certificate must chain to
	// (PEM; several during a CA rotation). CertFile and KeyFile are this
	// node's certificate (PEM, intermediates after it) and key.
	CAFile, CertFile, KeyFile string
	// Name, if set, is this node's name: a certificate for another name
	// is refused, at start and at every reload.
	Name string
	// CheckInterval bounds how often a handshake looks at the files' times
	// and sizes (default 1 s): a replaced certificate is used by the
	// handshakes that begin CheckInterval after the replacement.
	CheckInterval time.Duration
	// PollInterval is how often a goroutine looks at the files even
	// without handshakes, and checks the expiry (default 10 s; negative:
	// no goroutine, for tests that call Check themselves).
	PollInterval time.Duration
	// WarnBefore: a certificate (this node's, or a CA) that expires within
	// this long is logged at Warn, once an hour (default 7 days).
	WarnBefore time.Duration
	// Now is the clock (default time.Now): certificate validity, the
	// check interval and the expiry warning all read it.
	Now func() time.Time
	// Logger receives reloads and failures (default slog.Default()).
	Logger *slog.Logger
}

// Enabled reports whether any of the files is set.
func (c Config) Enabled() bool { return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" }

// Validate refuses a partial configuration: the three files go together.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if c.CAFile == "" || c.CertFile == "" || c.KeyFile == "" {
		return errors.New("TLS needs all three of the CA, the certificate and the key")
	}
	return nil
}

// Reloader holds a node's CA, certificate and key, and reads them again
// when their files change, so that a certificate is rotated by replacing
// its files, without a restart. Connections already open keep the
// certificate they were made with; new ones use the new one.
//
// A replacement that cannot be used (a key that is not the certificate's,
// a certificate that does not chain to the CA or names another node, a
// file caught half-written) is logged and ignored: the node keeps the
// material it has and tries again at the next check.
type Reloader struct {
	cfg Config
	log *slog.Logger
	cur atomic.Pointer[material]
	// lastCheck is the clock's UnixNano at the last check.
	lastCheck atomic.Int64

	mu       sync.Mutex // one check at a time; guards the fields below
	stamps   [3]os.FileInfo
	lastErr  string
	warnedAt time.Time

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// material is one consistent set of CA, certificate and key.
type material struct {
	cert *tls.Certificate // Leaf set
	cas  []*x509.Certificate
	pool *x509.CertPool
	name string
	// caExpiry is the earliest NotAfter of the CA certificates.
	caExpiry time.Time
}

// NewReloader reads the files, checks that they belong together (the key
// is the certificate's, the certificate chains to the CA and, if
// cfg.Name is set, names this node) and starts watching them. Close it.
func NewReloader(cfg Config) (*Reloader, error) {
	if !cfg.Enabled() {
		return nil, errors.New("tlsutil: no TLS files given")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tlsutil: %w", err)
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 10 * time.Second
	}
	if cfg.WarnBefore <= 0 {
		cfg.WarnBefore = 7 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reloader{cfg: cfg, log: cfg.Logger.With("component", "tls"), stop: make(chan struct{})}
	stamps, err := r.statAll()
	if err != nil {
		return nil, err
	}
	m, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cur.Store(m)
	r.stamps = stamps
	r.lastCheck.Store(cfg.Now().UnixNano())
	r.mu.Lock()
	r.warnExpiry(m)
	r.mu.Unlock()
	if cfg.PollInterval > 0 {
		r.wg.Add(1)
		go r.poll()
	}
	return r, nil
}

// Close stops watching the files. Safe to call twice.
func (r *Reloader) Close() {
	r.closeOnce.Do(func() {
		close(r.stop)
		r.wg.Wait()
	})
}

func (r *Reloader) poll() {
	defer r.wg.Done()
	t := beat.NewTicker(r.cfg.PollInterval) // on the process's beat: see package beat
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.Check()
		}
	}
}

// Name is the node name in the current certificate.
func (r *Reloader) Name() string { return r.cur.Load().name }

// Certificate is the current certificate (its Leaf is set).
func (r *Reloader) Certificate() *tls.Certificate { return r.cur.Load().cert }

// Expiry is when the current certificate expires, and when the first of
// the CA certificates does.
func (r *Reloader) Expiry() (cert, ca time.Time) {
	m := r.cur.Load()
	return m.cert.Leaf.NotAfter, m.caExpiry
}

// CAs are the CA certificates in use.
func (r *Reloader) CAs() []*x509.Certificate {
	return append([]*x509.Certificate(nil), r.cur.Load().cas...)
}

// Now is the reloader's clock.
func (r *Reloader) Now() time.Time { return r.cfg.Now() }

// maybeCheck checks the files if CheckInterval has passed since the last
// check and no other check is running: the handshake path, which never
// waits for a check.
func (r *Reloader) maybeCheck() {
	now := r.cfg.Now().UnixNano()
	if now-r.lastCheck.Load() < int64(r.cfg.CheckInterval) {
		return
	}
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	r.checkLocked()
}

// Check looks at the files now and reloads them if any changed. It
// returns the error that kept a change from being used, if one did (the
// current material stays in use).
func (r *Reloader) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkLocked()
}

func (r *Reloader) checkLocked() error {
	r.lastCheck.Store(r.cfg.Now().UnixNano())
	defer func() { r.warnExpiry(r.cur.Load()) }()
	stamps, err := r.statAll()
	if err == nil && sameStamps(stamps, r.stamps) {
		return nil
	}
	var m *material
	if err == nil {
		m, err = r.load()
	}
	if err != nil {
		if msg := err.Error(); msg != r.lastErr {
			r.lastErr = msg
			r.log.Warn("tls: the certificate files changed but cannot be used; keeping the current certificate", "err", err)
		}
		return err
	}
	old := r.cur.Swap(m)
	r.stamps, r.lastErr = stamps, ""
	r.log.Info("tls: certificate reloaded", "name", m.name, "serial", m.cert.Leaf.SerialNumber.Text(16),
		"expires", m.cert.Leaf.NotAfter.Format(time.RFC3339), "previous_serial", old.cert.Leaf.SerialNumber.Text(16))
	return nil
}

// warnExpiry logs, at most once an hour, a certificate that expires
// within WarnBefore.
func (r *Reloader) warnExpiry(m *material) {
	now := r.cfg.Now()
	certLeft, caLeft := m.cert.Leaf.NotAfter.Sub(now), m.caExpiry.Sub(now)
	if certLeft >= r.cfg.WarnBefore && caLeft >= r.cfg.WarnBefore {
		return
	}
	if !r.warnedAt.IsZero() && now.Sub(r.warnedAt) < time.Hour {
		return
	}
	r.warnedAt = now
	r.log.Warn("tls: a certificate expires soon; issue a new one ('shoal tls issue') and replace the files: the node reloads them",
		"cert", r.cfg.CertFile, "cert_expires", m.cert.Leaf.NotAfter.Format(time.RFC3339), "cert_left", certLeft.Round(time.Second).String(),
		"ca", r.cfg.CAFile, "ca_expires", m.caExpiry.Format(time.RFC3339), "ca_left", caLeft.Round(time.Second).String())
}

func (r *Reloader) statAll() ([3]os.FileInfo, error) {
	var out [3]os.FileInfo
	for i, p := range []string{r.cfg.CAFile, r.cfg.CertFile, r.cfg.KeyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("tlsutil: %w", err)
		}
		out[i] = fi
	}
	return out, nil
}

func sameStamps(a, b [3]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

// load reads and checks the three files.
func (r *Reloader) load() (*material, error) {
	cas, err := readCerts(r.cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	var caExpiry time.Time
	for _, c := range cas {
		pool.AddCert(c)
		if caExpiry.IsZero() || c.NotAfter.Before(caExpiry) {
			caExpiry = c.NotAfter
		}
	}
	pair, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: certificate %s and key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	m := &material{cert: &pair, cas: cas, pool: pool, caExpiry: caExpiry}
	name, err := m.verify(pair.Certificate, r.cfg.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w (CA file %s)", r.cfg.CertFile, err, r.cfg.CAFile)
	}
	if _, err := m.verify(pair.Certificate, r.cfg.Now(), x509.ExtKeyUsageServerAuth); err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w", r.cfg.CertFile, err)
	}
	if r.cfg.Name != "" && name != r.cfg.Name {
		return nil, fmt.Errorf("tlsutil: %s is the certificate of node %q, not of this node %q", r.cfg.CertFile, name, r.cfg.Name)
	}
	m.name = name
	return m, nil
}

// verify checks a presented chain (raw DER, leaf first) against the CA
// for usage and returns the node name it carries.
func (m *material) verify(raw [][]byte, now time.Time, usage x509.ExtKeyUsage) (string, error) {
	if len(raw) == 0 {
		return "", &RefusedError{Reason: ReasonNoCertificate, Err: errors.New("no certificate presented")}
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return "", &RefusedError{Reason: ReasonBadCertificate, Err: err}
		}
		certs[i] = c
	}
	return m.verifyParsed(certs, now, usage)
}

func (m *material) verifyParsed(certs []*x509.Certificate, now time.Time, usage x509.ExtKeyUsage) (string, error) {
	if len(certs) == 0 {
		return "", &RefusedError{Reason: ReasonNoCertificate, Err: errors.New("no certificate presented")}
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", &RefusedError{Reason: verifyReason(err), Err: err}
	}
	name, err := NameOf(leaf)
	if err != nil {
		return "", &RefusedError{Reason: ReasonBadCertificate, Err: err}
	}
	return name, nil
}

func verifyReason(err error) string {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return ReasonUnknownAuthority
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return ReasonExpired
	}
	return ReasonBadCertificate
}

// ServerConfig is the TLS configuration of a listener whose peers are
// nodes: TLS 1.3, this node's current certificate, and a client
// certificate required and verified against the current CA. The client's
// node name is then PeerName of the connection's state.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Requested here and required by VerifyConnection, so that a
		// refusal says why (no certificate, another CA, expired).
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			r.maybeCheck()
			return r.cur.Load().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := r.cur.Load().verifyParsed(cs.PeerCertificates, r.cfg.Now(), x509.ExtKeyUsageClientAuth)
			return err
		},
		// Every connection is a full handshake that checks the
		// certificate against the CA of the moment.
		SessionTicketsDisabled: true,
	}
}

// ClientConfig is the TLS configuration for dialing a node: TLS 1.3, this
// node's current certificate, and the server's certificate verified
// against the current CA (by chain and usage, not by host name: the
// caller compares PeerName with the node it meant to reach).
func (r *Reloader) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			r.maybeCheck()
			return r.cur.Load().cert, nil
		},
		// The standard verification checks a host name; a node is
		// identified by the name in its certificate instead, which
		// VerifyConnection checks along with the chain.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := r.cur.Load().verifyParsed(cs.PeerCertificates, r.cfg.Now(), x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// PeerName is the node name in the certificate a verified connection's
// peer presented.
func PeerName(cs tls.ConnectionState) (string, error) {
	if !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return "", &RefusedError{Reason: ReasonNoCertificate, Err: errors.New("no verified peer certificate")}
	}
	name, err := NameOf(cs.PeerCertificates[0])
	if err != nil {
		return "", &RefusedError{Reason: ReasonBadCertificate, Err: err}
	}
	return name, nil
}
