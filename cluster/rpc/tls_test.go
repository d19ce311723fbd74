package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// syncBuf is a log sink for several goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// pki is a test CA with its nodes' reloaders.
type pki struct {
	dir string
}

func newPKI(t testing.TB, names ...string) *pki {
	t.Helper()
	p := &pki{dir: filepath.Join(t.TempDir(), "tls")}
	if err := tlsutil.InitCA(p.dir, tlsutil.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := tlsutil.Issue(p.dir, n, tlsutil.IssueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *pki) reloader(t testing.TB, name string) *tlsutil.Reloader {
	t.Helper()
	r, err := tlsutil.NewReloader(tlsutil.Config{Name: name, CAFile: filepath.Join(p.dir, tlsutil.CAFile),
		CertFile: filepath.Join(p.dir, tlsutil.CertFile(name)), KeyFile: filepath.Join(p.dir, tlsutil.KeyFile(name)), PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func (p *pki) network(t testing.TB, name string) *wire.TCP {
	r := p.reloader(t, name)
	return &wire.TCP{TLS: &wire.TLS{Server: r.ServerConfig(), Client: r.ClientConfig()}}
}

// startSecure starts a node with mutual TLS that admits the members.
func (r *registry) startSecure(t testing.TB, name string, netw *wire.TCP, members []string, refusals *tlsutil.Refusals, log *slog.Logger) *Node {
	t.Helper()
	n, err := New(Config{Name: name, Network: netw, ListenAddr: "127.0.0.1:0", Resolve: r.resolve, Secure: true,
		Refusals: refusals, Logger: log,
		Admit: func(_ context.Context, peer string) error {
			for _, m := range members {
				if m == peer {
					return nil
				}
			}
			return errors.New("not a member")
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.set(name, n.Addr())
	t.Cleanup(func() { n.Close() })
	return n
}

func (r *registry) set(name, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.addrs == nil {
		r.addrs = map[string]string{}
	}
	r.addrs[name] = addr
}

// attack dials addr over netw, says hello as name and reports whether the
// node answered its hello.
func attack(t *testing.T, netw wire.Network, addr, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := netw.Dial(ctx, addr)
	if err != nil {
		return false // refused during the handshake
	}
	defer c.Close()
	if err := c.Send(&wire.Frame{Kind: wire.KindHello, Body: []byte(name)}); err != nil {
		return false
	}
	t2 := time.AfterFunc(10*time.Second, func() { c.Close() })
	defer t2.Stop()
	f, err := c.Recv()
	return err == nil && f.Kind == wire.KindHello
}

// Each way in that is not a member's own certificate is refused, logged
// with the peer's address and the reason, and counted; members talk.
func TestMutualTLSRefusals(t *testing.T) {
	p := newPKI(t, "a", "b", "mallory")
	foreign := newPKI(t, "a")
	var reg registry
	logs := &syncBuf{}
	refusals := &tlsutil.Refusals{}
	members := []string{"a", "b"}
	a := reg.startSecure(t, "a", p.network(t, "a"), members, refusals, slog.New(slog.NewTextHandler(logs, nil)))
	b := reg.startSecure(t, "b", p.network(t, "b"), members, nil, nil)
	a.Handle("echo", echo)
	b.Handle("echo", echo)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		from *Node
		to   string
	}{{a, "b"}, {b, "a"}} {
		if resp, err := c.from.Call(ctx, c.to, "echo", []byte("hi")); err != nil || string(resp) != c.from.Name()+":hi" {
			t.Fatalf("%s to %s: %q, %v", c.from.Name(), c.to, resp, err)
		}
	}

	mallory := p.reloader(t, "mallory")
	cert := func(r *tlsutil.Reloader) []tls.Certificate { return []tls.Certificate{*r.Certificate()} }
	attacker := func(certs []tls.Certificate) *wire.TCP {
		return &wire.TCP{TLS: &wire.TLS{Client: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: certs}}}
	}
	for _, c := range []struct {
		what, reason string
		netw         wire.Network
		hello        string
	}{
		{"plaintext", tlsutil.ReasonNotTLS, &wire.TCP{}, "b"},
		{"no certificate", tlsutil.ReasonNoCertificate, attacker(nil), "b"},
		{"another CA's certificate named b", tlsutil.ReasonUnknownAuthority, attacker(cert(foreign.reloader(t, "a"))), "b"},
		{"mallory's certificate, claiming b", tlsutil.ReasonNameMismatch, attacker(cert(mallory)), "b"},
		{"mallory's certificate, not a member", tlsutil.ReasonNotMember, attacker(cert(mallory)), "mallory"},
	} {
		if attack(t, c.netw, a.Addr(), c.hello) {
			t.Fatalf("%s: the node answered the hello", c.what)
		}
		// Counted, then logged: poll for both (the log line can follow the
		// count by a scheduling delay on a loaded machine).
		deadline := time.Now().Add(30 * time.Second)
		for refusals.Get("rpc", c.reason) != 1 || !strings.Contains(logs.String(), "reason="+c.reason) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: refusals %v, want one %s, logged:\n%s", c.what, refusals.Snapshot(), c.reason, logs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got := a.Stats().Refused.Load(); got != 5 {
		t.Fatalf("Refused = %d, want 5", got)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, "refused peer") && (!strings.Contains(line, "level=WARN") || !strings.Contains(line, "remote=127.0.0.1:")) {
			t.Fatalf("a refusal not at Warn with the peer's address: %s", line)
		}
	}
	// The members still talk, on their connection of before.
	if _, err := b.Call(ctx, "a", "echo", nil); err != nil {
		t.Fatal(err)
	}
}

// A node dialed by name must present that name's certificate: a node
// that resolves b to mallory's address refuses mallory.
func TestMutualTLSDialChecksName(t *testing.T) {
	p := newPKI(t, "a", "mallory")
	var reg registry
	refusals := &tlsutil.Refusals{}
	members := []string{"a", "b", "mallory"}
	a := reg.startSecure(t, "a", p.network(t, "a"), members, refusals, nil)
	m := reg.startSecure(t, "mallory", p.network(t, "mallory"), members, nil, nil)
	m.Handle("echo", echo)
	reg.set("b", m.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.Call(ctx, "b", "echo", nil)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), tlsutil.ReasonNameMismatch) {
		t.Fatalf("call to b answered by mallory: %v", err)
	}
	if refusals.Get("rpc", tlsutil.ReasonNameMismatch) != 1 {
		t.Fatalf("refusals %v", refusals.Snapshot())
	}
}
