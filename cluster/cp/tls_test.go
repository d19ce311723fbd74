package cp

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// testPKI is a CA directory whose nodes' certificates are issued on
// demand.
type testPKI struct{ dir string }

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: filepath.Join(t.TempDir(), "tls")}
	if err := tlsutil.InitCA(p.dir, tlsutil.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// reloader issues name's certificate and loads it.
func (p *testPKI) reloader(t testing.TB, name string) *tlsutil.Reloader {
	t.Helper()
	if _, err := tlsutil.Issue(p.dir, name, tlsutil.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	return p.load(t, name)
}

// load loads name's certificate, issued before.
func (p *testPKI) load(t testing.TB, name string) *tlsutil.Reloader {
	t.Helper()
	r, err := tlsutil.NewReloader(tlsutil.Config{Name: name, CAFile: filepath.Join(p.dir, tlsutil.CAFile),
		CertFile: filepath.Join(p.dir, tlsutil.CertFile(name)), KeyFile: filepath.Join(p.dir, tlsutil.KeyFile(name)), PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func newSecureCluster(t *testing.T, p *testPKI, n int) *testCluster {
	tc := &testCluster{t: t, expect: n, secure: func(name string) *tlsutil.Reloader { return p.reloader(t, name) }}
	for i := 1; i <= n; i++ {
		tc.add(fmt.Sprintf("n%d", i), t.TempDir())
	}
	return tc
}

// forger is a raft client with TLS configuration of its choosing: the
// attacker's own raft transport.
type forger struct {
	tls *tls.Config
	ln  net.Listener
}

func (f *forger) Accept() (net.Conn, error) { return f.ln.Accept() }
func (f *forger) Close() error              { return f.ln.Close() }
func (f *forger) Addr() net.Addr            { return f.ln.Addr() }
func (f *forger) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if f.tls == nil {
		return net.DialTimeout("tcp", string(a), timeout)
	}
	return (&tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: f.tls}).Dial("tcp", string(a))
}

func forge(t *testing.T, cfg *tls.Config) *raft.NetworkTransport {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := raft.NewNetworkTransport(&forger{tls: cfg, ln: ln}, 1, 10*time.Second, io.Discard)
	t.Cleanup(func() { tr.Close() })
	return tr
}

func clientOf(r *tlsutil.Reloader) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{*r.Certificate()}}
}

// Raft over mutual TLS: a forged AppendEntries that would depose the
// leader (a term 1,000 higher) and inject an entry is refused, logged
// and counted, from a client without a certificate, with another CA's,
// with a certificate of the cluster's CA for a node that is not a
// member, and with a member's certificate claiming to be the leader.
func TestRaftRefusesForgedAppendEntries(t *testing.T) {
	p := newTestPKI(t)
	tc := newSecureCluster(t, p, 3)
	leader := tc.leader()
	ctx := ctxT(t)
	if _, err := leader.store.Put(ctx, "k", []byte("real")); err != nil {
		t.Fatal(err)
	}
	term := leader.store.raft.CurrentTerm()
	var follower, other *member
	for _, m := range tc.members {
		if m != leader && follower == nil {
			follower = m
		} else if m != leader {
			other = m
		}
	}
	last := follower.store.raft.LastIndex()
	forged := func(id string) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(leader.trans.LocalAddr())},
			Term:      term + 1000, PrevLogEntry: last, PrevLogTerm: term, LeaderCommitIndex: last + 1,
			Entries: []*raft.Log{{Index: last + 1, Term: term + 1000, Type: raft.LogCommand, Data: []byte("FORGED")}},
		}
	}

	foreign := newTestPKI(t)
	for _, c := range []struct {
		what, reason string
		tls          *tls.Config
		id           string
	}{
		{"plaintext", tlsutil.ReasonNotTLS, nil, leader.name},
		{"no certificate", tlsutil.ReasonNoCertificate, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}, leader.name},
		{"another CA's certificate for the leader", tlsutil.ReasonUnknownAuthority, clientOf(foreign.reloader(t, leader.name)), leader.name},
		{"the cluster CA's certificate for a non-member", tlsutil.ReasonNotMember, clientOf(p.reloader(t, "rogue")), "rogue"},
		// other's own certificate, as if stolen from it.
		{"a member's certificate claiming to be the leader", tlsutil.ReasonRaftID, clientOf(p.load(t, other.name)), leader.name},
	} {
		var resp raft.AppendEntriesResponse
		err := forge(t, c.tls).AppendEntries(raft.ServerID(follower.name), follower.trans.LocalAddr(), forged(c.id), &resp)
		if err == nil {
			t.Fatalf("%s: the forged append was answered: %+v", c.what, resp)
		}
		// Counted, and logged at Warn with the attacker's address and the
		// reason.
		logged := regexp.MustCompile(`level=WARN .*refused peer traffic" .*listener=raft reason=` + c.reason + ` remote=127\.0\.0\.1:\d+`)
		testkit.Eventually(t, 30*time.Second, c.what+": the refusal counted and logged as "+c.reason, func() bool {
			return tc.refusals.Get("raft", c.reason) >= 1 && logged.MatchString(tc.refusalLog.String())
		})
	}
	for _, m := range tc.members {
		if got := m.store.raft.CurrentTerm(); got != term {
			t.Fatalf("%s is at term %d, was %d: a forged append moved it", m.name, got, term)
		}
	}
	if l := tc.leader(); l != leader {
		t.Fatalf("the leader changed from %s to %s", leader.name, l.name)
	}
	// Every replica agrees, and nothing forged was applied.
	v, err := leader.store.Put(ctx, "k", []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range tc.members {
		testkit.Eventually(t, 30*time.Second, m.name+" to apply the write after the attacks", func() bool {
			kv, err := m.store.StaleGet("k")
			return err == nil && kv.Version == v && string(kv.Value) == "after"
		})
	}
	if follower.store.raft.LastIndex() < last+1 {
		t.Fatal("the follower's log did not advance")
	}
	t.Logf("refusals: %v", tc.refusals.Snapshot())
}

// The dialing side of raft over mutual TLS: a node that dials raft server
// "n2" at an address where another node of the cluster's CA ("n3")
// answers refuses the connection before sending anything (logged and
// counted as name_mismatch), where the accepting side alone would have
// taken the request (it comes from n1 with n1's certificate).
func TestRaftDialChecksServerName(t *testing.T) {
	p := newTestPKI(t)
	type refusal struct{ reason, remote, name string }
	refusedCh := make(chan refusal, 16)
	t1, err := NewTransport(TransportConfig{Bind: "127.0.0.1:0", TLS: p.reloader(t, "n1"), Logger: testLogger(t),
		Refused: func(reason, remote, name string, err error) {
			select {
			case refusedCh <- refusal{reason, remote, name}:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { t1.Close() })
	t3, err := NewTransport(TransportConfig{Bind: "127.0.0.1:0", TLS: p.reloader(t, "n3"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { t3.Close() })
	var served atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case rpc := <-t3.Consumer():
				served.Add(1)
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(done); wg.Wait() })
	req := func() *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax,
			ID: []byte("n1"), Addr: []byte(t1.LocalAddr())}, Term: 1}
	}

	var resp raft.AppendEntriesResponse
	err = t1.AppendEntries("n2", t3.LocalAddr(), req(), &resp)
	if err == nil || !strings.Contains(err.Error(), tlsutil.ReasonNameMismatch) {
		t.Fatalf("n1 dialing n2 at n3's address: %v (response %+v)", err, resp)
	}
	select {
	case r := <-refusedCh:
		if r.reason != tlsutil.ReasonNameMismatch || r.name != "n2" || r.remote != string(t3.LocalAddr()) {
			t.Fatalf("refusal %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no refusal reported")
	}
	for _, call := range []func() error{
		func() error {
			return t1.RequestVote("n2", t3.LocalAddr(), &raft.RequestVoteRequest{RPCHeader: req().RPCHeader}, &raft.RequestVoteResponse{})
		},
		func() error { _, err := t1.AppendEntriesPipeline("n2", t3.LocalAddr()); return err },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), tlsutil.ReasonNameMismatch) {
			t.Fatalf("another request to n2 at n3's address: %v", err)
		}
	}
	if n := served.Load(); n != 0 {
		t.Fatalf("n3 was handed %d requests meant for n2", n)
	}
	// Dialed as itself, n3 is reached.
	if err := t1.AppendEntries("n3", t3.LocalAddr(), req(), &resp); err != nil || !resp.Success {
		t.Fatalf("n1 to n3: %v %+v", err, resp)
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("n3 served %d requests, want 1", n)
	}
}
