package tlsutil

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func newCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	if err := InitCA(dir, CAOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func issue(t *testing.T, dir, name string, o IssueOptions) {
	t.Helper()
	if _, err := Issue(dir, name, o); err != nil {
		t.Fatal(err)
	}
}

func reloader(t *testing.T, dir, name string, cfg Config) *Reloader {
	t.Helper()
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = filepath.Join(dir, CAFile), filepath.Join(dir, CertFile(name)), filepath.Join(dir, KeyFile(name))
	if cfg.PollInterval == 0 {
		cfg.PollInterval = -1
	}
	r, err := NewReloader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestInitAndIssueFiles(t *testing.T) {
	dir := newCA(t)
	if err := InitCA(dir, CAOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second InitCA: %v, want ErrExists", err)
	}
	cert, err := Issue(dir, "node-ü 1", IssueOptions{IPs: []net.IP{net.ParseIP("127.0.0.1")}, DNS: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if name, err := NameOf(cert); err != nil || name != "node-ü 1" {
		t.Fatalf("NameOf = %q, %v", name, err)
	}
	if cert.Subject.CommonName != "node-ü 1" || len(cert.IPAddresses) != 1 || cert.DNSNames[0] != "localhost" {
		t.Fatalf("certificate: CN %q, IPs %v, DNS %v", cert.Subject.CommonName, cert.IPAddresses, cert.DNSNames)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v, %v; want 0700", st.Mode().Perm(), err)
	}
	for _, f := range []string{CAFile, CAKeyFile, CertFile("node-ü 1"), KeyFile("node-ü 1")} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v; want 0600", f, st.Mode().Perm(), err)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
	for _, bad := range []string{"", "a/b", "..", strings.Repeat("x", 65), "ca"} {
		if _, err := Issue(dir, bad, IssueOptions{}); err == nil {
			t.Fatalf("Issue(%q) succeeded", bad)
		}
	}
	if _, err := Issue(t.TempDir(), "x", IssueOptions{}); err == nil {
		t.Fatal("Issue without a CA succeeded")
	}
}

func TestReloaderRefusesMismatches(t *testing.T) {
	dir := newCA(t)
	issue(t, dir, "a", IssueOptions{})
	other := newCA(t)
	issue(t, other, "b", IssueOptions{})
	cfg := Config{CAFile: filepath.Join(dir, CAFile), CertFile: filepath.Join(dir, CertFile("a")), KeyFile: filepath.Join(dir, KeyFile("a")), PollInterval: -1}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"another node's name", func(c *Config) { c.Name = "b" }, `not of this node "b"`},
		{"another CA", func(c *Config) {
			c.CertFile, c.KeyFile = filepath.Join(other, CertFile("b")), filepath.Join(other, KeyFile("b"))
		}, "unknown_authority"},
		{"another key", func(c *Config) { c.KeyFile = filepath.Join(other, KeyFile("b")) }, "private key does not match"},
		{"partial", func(c *Config) { c.KeyFile = "" }, "all three"},
		{"missing", func(c *Config) { c.CAFile = filepath.Join(dir, "nope.pem") }, "no such file"},
	} {
		cc := cfg
		c.edit(&cc)
		r, err := NewReloader(cc)
		if err == nil {
			r.Close()
			t.Fatalf("%s: accepted", c.name)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v, want it to say %q", c.name, err, c.want)
		}
	}
	cc := cfg
	cc.Name = "a"
	r, err := NewReloader(cc)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close()
}

// handshake runs a TLS handshake over loopback TCP between a server and
// a client config and returns the server's and the client's errors (the
// client's including its first read, where TLS 1.3 reports a refusal of
// its certificate) and the name the server saw.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error, name string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			serverErr = err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if serverErr = tc.HandshakeContext(ctx); serverErr == nil {
			name, serverErr = PeerName(tc.ConnectionState())
			if serverErr == nil {
				tc.Write([]byte("ok"))
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if clientErr = tc.Handshake(); clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 2))
	}
	<-done
	return serverErr, clientErr, name
}

func TestHandshakeRefusals(t *testing.T) {
	dir := newCA(t)
	issue(t, dir, "server", IssueOptions{})
	issue(t, dir, "client", IssueOptions{})
	other := newCA(t)
	issue(t, other, "client", IssueOptions{})
	clk := &clock{t: time.Now()}
	srv := reloader(t, dir, "server", Config{Now: clk.Now})
	good := reloader(t, dir, "client", Config{})

	sErr, cErr, name := handshake(t, srv.ServerConfig(), good.ClientConfig())
	if sErr != nil || cErr != nil || name != "client" {
		t.Fatalf("valid pair: server %v, client %v, name %q", sErr, cErr, name)
	}

	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	sErr, cErr, _ = handshake(t, srv.ServerConfig(), noCert)
	if Reason(sErr) != ReasonNoCertificate || cErr == nil {
		t.Fatalf("no certificate: server %v (%s), client %v", sErr, Reason(sErr), cErr)
	}

	foreign := reloader(t, other, "client", Config{})
	// An attacker's client: it trusts any server.
	attacker := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{*foreign.Certificate()}}
	sErr, cErr, _ = handshake(t, srv.ServerConfig(), attacker)
	if Reason(sErr) != ReasonUnknownAuthority || cErr == nil {
		t.Fatalf("another CA: server %v (%s), client %v", sErr, Reason(sErr), cErr)
	}

	// The client refuses a server from another CA too.
	foreignSrv := reloader(t, other, "client", Config{})
	sErr, cErr, _ = handshake(t, foreignSrv.ServerConfig(), good.ClientConfig())
	if Reason(cErr) != ReasonUnknownAuthority || sErr == nil {
		t.Fatalf("server of another CA: server %v, client %v (%s)", sErr, cErr, Reason(cErr))
	}

	// A year and a day later the client's certificate has expired.
	clk.Add(366 * 24 * time.Hour)
	sErr, _, _ = handshake(t, srv.ServerConfig(), good.ClientConfig())
	if Reason(sErr) != ReasonExpired {
		t.Fatalf("expired: server %v (%s)", sErr, Reason(sErr))
	}

	// A plaintext client.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Write([]byte("\x00\x00\x00\x10hello, in plaintext"))
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = tls.Server(c, srv.ServerConfig()).Handshake()
	if Reason(err) != ReasonNotTLS {
		t.Fatalf("plaintext: %v (%s)", err, Reason(err))
	}
}

func TestReloadOnChange(t *testing.T) {
	dir := newCA(t)
	issue(t, dir, "n", IssueOptions{})
	logs := &logBuf{}
	clk := &clock{t: time.Now()}
	r := reloader(t, dir, "n", Config{Name: "n", Now: clk.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	first := r.Certificate().Leaf.SerialNumber
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if r.Certificate().Leaf.SerialNumber.Cmp(first) != 0 {
		t.Fatal("reloaded without a change")
	}

	// A key that is not the certificate's (a rotation caught between its
	// two files): refused, the current pair stays.
	key := filepath.Join(dir, KeyFile("n"))
	old, _ := os.ReadFile(key)
	issue(t, dir, "other", IssueOptions{})
	b, _ := os.ReadFile(filepath.Join(dir, KeyFile("other")))
	if err := os.WriteFile(key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Check(); err == nil {
		t.Fatal("a mismatched key was accepted")
	}
	if r.Certificate().Leaf.SerialNumber.Cmp(first) != 0 {
		t.Fatal("the current certificate was dropped for a bad one")
	}
	if !strings.Contains(logs.String(), "cannot be used") {
		t.Fatalf("no warning logged:\n%s", logs)
	}
	os.WriteFile(key, old, 0o600)

	// A new certificate: picked up by the handshake path once
	// CheckInterval has passed, not before.
	issue(t, dir, "n", IssueOptions{})
	r.maybeCheck()
	if r.Certificate().Leaf.SerialNumber.Cmp(first) != 0 {
		t.Fatal("reloaded before CheckInterval passed")
	}
	clk.Add(2 * time.Second)
	r.maybeCheck()
	if r.Certificate().Leaf.SerialNumber.Cmp(first) == 0 {
		t.Fatal("the new certificate was not loaded")
	}
	if !strings.Contains(logs.String(), "certificate reloaded") {
		t.Fatalf("reload not logged:\n%s", logs)
	}

	// Another node's certificate in this node's files is refused.
	issue(t, dir, "m", IssueOptions{})
	for _, f := range [][2]string{{CertFile("m"), CertFile("n")}, {KeyFile("m"), KeyFile("n")}} {
		b, _ := os.ReadFile(filepath.Join(dir, f[0]))
		os.WriteFile(filepath.Join(dir, f[1]), b, 0o600)
	}
	if err := r.Check(); err == nil || !strings.Contains(err.Error(), `not of this node "n"`) {
		t.Fatalf("another node's certificate: %v", err)
	}
	if r.Name() != "n" {
		t.Fatalf("name %q after a refused reload", r.Name())
	}
}

func TestExpiryWarning(t *testing.T) {
	dir := newCA(t)
	issue(t, dir, "n", IssueOptions{Validity: 10 * 24 * time.Hour})
	logs := &logBuf{}
	clk := &clock{t: time.Now()}
	r := reloader(t, dir, "n", Config{Now: clk.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if strings.Contains(logs.String(), "expires soon") {
		t.Fatalf("warned with 10 days left:\n%s", logs)
	}
	cert, _ := r.Expiry()
	if d := cert.Sub(clk.Now()); d < 9*24*time.Hour || d > 10*24*time.Hour {
		t.Fatalf("expiry in %v, want about 10 days", d)
	}
	clk.Add(4 * 24 * time.Hour)
	r.Check()
	if n := strings.Count(logs.String(), "expires soon"); n != 1 {
		t.Fatalf("%d warnings with 6 days left, want 1:\n%s", n, logs)
	}
	clk.Add(10 * time.Minute)
	r.Check()
	if n := strings.Count(logs.String(), "expires soon"); n != 1 {
		t.Fatalf("%d warnings 10 minutes later, want still 1", n)
	}
	clk.Add(time.Hour)
	r.Check()
	if n := strings.Count(logs.String(), "expires soon"); n != 2 {
		t.Fatalf("%d warnings an hour later, want 2", n)
	}
}

func TestRefusals(t *testing.T) {
	var r *Refusals
	r.Add("rpc", ReasonNotTLS) // nil: counts nothing, no panic
	r = &Refusals{}
	r.Add("rpc", ReasonNotTLS)
	r.Add("rpc", ReasonNotTLS)
	r.Add("raft", ReasonNotMember)
	if r.Get("rpc", ReasonNotTLS) != 2 || len(r.Snapshot()) != 2 || r.Snapshot()[0].Listener != "raft" {
		t.Fatalf("snapshot %v", r.Snapshot())
	}
}
