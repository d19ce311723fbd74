package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/rpc"
	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// nodeCerts is one node's certificate directory, as on its own machine:
// ca.pem, cert.pem, key.pem.
type nodeCerts struct{ dir string }

func (c nodeCerts) config(name string) tlsutil.Config {
	return tlsutil.Config{Name: name, CAFile: filepath.Join(c.dir, "ca.pem"), CertFile: filepath.Join(c.dir, "cert.pem"),
		KeyFile: filepath.Join(c.dir, "key.pem"), PollInterval: 50 * time.Millisecond, CheckInterval: 50 * time.Millisecond}
}

// install copies src to dst through a temporary file and a rename, as an
// operator's deployment tool would.
func install(t testing.TB, dst string, srcs ...string) {
	t.Helper()
	var b []byte
	for _, s := range srcs {
		p, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, p...)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// deploy issues name's certificate from the CA in caDir and installs it,
// with the CA files cas, in the node's directory.
func deploy(t testing.TB, caDir, name string, cas ...string) nodeCerts {
	t.Helper()
	if _, err := tlsutil.Issue(caDir, name, tlsutil.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	c := nodeCerts{dir: filepath.Join(filepath.Dir(caDir), "node-"+name)}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	install(t, filepath.Join(c.dir, "key.pem"), filepath.Join(caDir, tlsutil.KeyFile(name)))
	install(t, filepath.Join(c.dir, "cert.pem"), filepath.Join(caDir, tlsutil.CertFile(name)))
	install(t, filepath.Join(c.dir, "ca.pem"), cas...)
	return c
}

func newCA(t testing.TB, root, name string) string {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := tlsutil.InitCA(dir, tlsutil.CAOptions{Name: name}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func secureNode(t testing.TB, name string, certs nodeCerts, refusals *tlsutil.Refusals) (*Node, *tlsutil.Reloader) {
	t.Helper()
	cc := certs.config(name)
	cc.Logger = testLogger(t)
	r, err := tlsutil.NewReloader(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	cfg := fastLoopback(t, name)
	// A member paused by a loaded machine must not be declared failed:
	// its connections would be dropped, and the calls on them fail.
	patient(&cfg)
	cfg.DialTimeout = 4 * time.Second
	cfg.TLS, cfg.Refusals = r, refusals
	return startNode(t, cfg), r
}

// A secured cluster: members call each other and carry the bus; a node
// holding a valid certificate of the cluster's CA that is not a member
// is refused, logged and counted.
func TestSecuredClusterRefusesNonMember(t *testing.T) {
	root := t.TempDir()
	ca := newCA(t, root, "ca")
	refusals := &tlsutil.Refusals{}
	var nodes []*Node
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		var rf *tlsutil.Refusals
		if i == 1 {
			rf = refusals
		}
		n, _ := secureNode(t, name, deploy(t, ca, name, filepath.Join(ca, tlsutil.CAFile)), rf)
		nodes = append(nodes, n)
	}
	join(t, nodes[1], nodes[0])
	join(t, nodes[2], nodes[0])
	for _, n := range nodes {
		testkit.Eventually(t, 30*time.Second, n.Name()+" to see 3 members", func() bool { return aliveNames(n) == "n1,n2,n3" })
		n.RPC().Handle("echo", func(_ context.Context, from string, b []byte) ([]byte, error) { return []byte(from), nil })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			if got, err := a.RPC().Call(ctx, b.Name(), "echo", nil); err != nil || string(got) != a.Name() {
				t.Fatalf("%s to %s: %q, %v", a.Name(), b.Name(), got, err)
			}
		}
	}
	var rec recorder
	nodes[2].Bus().Subscribe("inv", &rec)
	if notAcked, err := nodes[0].Bus().PublishSync(ctx, "inv", []byte("x")); err != nil || len(notAcked) != 0 {
		t.Fatalf("PublishSync over TLS: %v, %v", notAcked, err)
	}

	// rogue has a certificate from the cluster's CA but never joined.
	rogueCerts := deploy(t, ca, "rogue", filepath.Join(ca, tlsutil.CAFile))
	rr, err := tlsutil.NewReloader(rogueCerts.config("rogue"))
	if err != nil {
		t.Fatal(err)
	}
	defer rr.Close()
	n1, _ := nodes[0].Member("n1")
	rogue, err := rpc.New(rpc.Config{Name: "rogue", Secure: true, Logger: testLogger(t),
		Network: &wire.TCP{TLS: &wire.TLS{Server: rr.ServerConfig(), Client: rr.ClientConfig()}},
		Resolve: func(string) (string, bool) { return n1.RPC, true }})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	if _, err := rogue.Call(ctx, "n1", "cp.apply", []byte("x")); err == nil {
		t.Fatal("a non-member's call was served")
	}
	testkit.Eventually(t, 30*time.Second, "the refusal counted", func() bool {
		return refusals.Get("rpc", tlsutil.ReasonNotMember) == 1
	})
}

// Certificates rotated by replacing files on a running 3-node cluster
// under RPC load, with a new CA: first the new CA beside the old in every
// node's CA file, then new certificates from the new CA, then a fourth
// node that knows only the new CA joins (the others must present their
// new certificates to it, and accept its), then the old CA is dropped.
// No call fails at any point.
func TestCertificateRotationUnderLoad(t *testing.T) {
	root := t.TempDir()
	oldCA, newCA_ := newCA(t, root, "ca-old"), newCA(t, root, "ca-new")
	oldPEM, newPEM := filepath.Join(oldCA, tlsutil.CAFile), filepath.Join(newCA_, tlsutil.CAFile)
	var nodes []*Node
	var reloaders []*tlsutil.Reloader
	var certs []nodeCerts
	refusals := &tlsutil.Refusals{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		c := deploy(t, oldCA, name, oldPEM)
		var rf *tlsutil.Refusals
		if i == 1 {
			rf = refusals
		}
		n, r := secureNode(t, name, c, rf)
		nodes, reloaders, certs = append(nodes, n), append(reloaders, r), append(certs, c)
	}
	join(t, nodes[1], nodes[0])
	join(t, nodes[2], nodes[0])
	for _, n := range nodes {
		testkit.Eventually(t, 30*time.Second, n.Name()+" to see 3 members", func() bool { return aliveNames(n) == "n1,n2,n3" })
	}
	echo := func(_ context.Context, from string, b []byte) ([]byte, error) { return b, nil }
	for _, n := range nodes {
		n.RPC().Handle("echo", echo)
	}

	// The load: two callers per node, each calling the others in turn.
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, n := range nodes {
		for c := 0; c < 2; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; loadCtx.Err() == nil; k++ {
					peer := nodes[(i+1+k%2)%3].Name()
					ctx, cancel := context.WithTimeout(loadCtx, 20*time.Second)
					_, err := n.RPC().Call(ctx, peer, "echo", []byte("ping"))
					cancel()
					if err != nil && loadCtx.Err() == nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Sprintf("%s to %s: %v", n.Name(), peer, err))
					}
					calls.Add(1)
				}
			}()
		}
	}
	defer func() { stopLoad(); wg.Wait() }()
	progress := func(what string) {
		t.Helper()
		from := calls.Load()
		testkit.Eventually(t, 30*time.Second, "calls to go on "+what, func() bool { return calls.Load() > from+50 })
	}
	progress("before the rotation")

	// 1. Trust both CAs.
	for _, c := range certs {
		install(t, filepath.Join(c.dir, "ca.pem"), oldPEM, newPEM)
	}
	for _, r := range reloaders {
		testkit.Eventually(t, 30*time.Second, r.Name()+" to trust both CAs", func() bool { return len(r.CAs()) == 2 })
	}
	// 2. New certificates from the new CA.
	for i, c := range certs {
		name := nodes[i].Name()
		if _, err := tlsutil.Issue(newCA_, name, tlsutil.IssueOptions{}); err != nil {
			t.Fatal(err)
		}
		install(t, filepath.Join(c.dir, "key.pem"), filepath.Join(newCA_, tlsutil.KeyFile(name)))
		install(t, filepath.Join(c.dir, "cert.pem"), filepath.Join(newCA_, tlsutil.CertFile(name)))
	}
	for _, r := range reloaders {
		testkit.Eventually(t, 30*time.Second, r.Name()+" to load its new certificate", func() bool {
			return strings.Contains(r.Certificate().Leaf.Issuer.CommonName, "ca-new")
		})
	}
	progress("after the new certificates")

	// 3. A node that trusts only the new CA joins and talks to everyone.
	n4, _ := secureNode(t, "n4", deploy(t, newCA_, "n4", newPEM), nil)
	n4.RPC().Handle("echo", echo)
	join(t, n4, nodes[0])
	all := append(append([]*Node(nil), nodes...), n4)
	for _, n := range all {
		testkit.Eventually(t, 30*time.Second, n.Name()+" to see 4 members", func() bool { return aliveNames(n) == "n1,n2,n3,n4" })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes {
		if _, err := n4.RPC().Call(ctx, n.Name(), "echo", nil); err != nil {
			t.Fatalf("n4 to %s: %v", n.Name(), err)
		}
		if _, err := n.RPC().Call(ctx, "n4", "echo", nil); err != nil {
			t.Fatalf("%s to n4: %v", n.Name(), err)
		}
	}

	// 4. Drop the old CA.
	for _, c := range certs {
		install(t, filepath.Join(c.dir, "ca.pem"), newPEM)
	}
	for _, r := range reloaders {
		testkit.Eventually(t, 30*time.Second, r.Name()+" to trust only the new CA", func() bool {
			cas := r.CAs()
			return len(cas) == 1 && cas[0].Subject.CommonName == "ca-new"
		})
	}
	progress("after the old CA is dropped")
	stopLoad()
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d calls failed during the rotation; the first: %v", f, calls.Load(), firstErr.Load())
	}
	t.Logf("%d calls, none failed", calls.Load())

	// A node with a certificate of the old CA is no longer heard (it
	// trusts both CAs, so that it is n1 that refuses it).
	oldOnly := deploy(t, oldCA, "n5", oldPEM, newPEM)
	or, err := tlsutil.NewReloader(oldOnly.config("n5"))
	if err != nil {
		t.Fatal(err)
	}
	defer or.Close()
	n1, _ := nodes[0].Member("n1")
	stale, err := rpc.New(rpc.Config{Name: "n5", Secure: true, Logger: testLogger(t),
		Network: &wire.TCP{TLS: &wire.TLS{Server: or.ServerConfig(), Client: or.ClientConfig()}},
		Resolve: func(string) (string, bool) { return n1.RPC, true }})
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	if _, err := stale.Call(ctx, "n1", "echo", nil); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a certificate of the dropped CA: %v", err)
	}
	testkit.Eventually(t, 30*time.Second, "n1 to count a certificate of an unknown CA", func() bool {
		return refusals.Get("rpc", tlsutil.ReasonUnknownAuthority) == 1
	})
}

// A node without a certificate (what 'shoal node --join' without --tls-*
// starts) cannot join a secured cluster even with the gossip key: the
// members refuse it at the gossip, log it with its address and the reason
// and count it, and it is told why; a secured node cannot join a
// plaintext cluster either. Without the check the plaintext node became a
// member that raft would count as a voter and dmap give partitions to.
func TestGossipRefusesNodeWithoutTLS(t *testing.T) {
	root := t.TempDir()
	ca := newCA(t, root, "ca")
	key := testKey(t, 7, 32)
	logs := &testkit.SyncBuffer{}
	cc := deploy(t, ca, "a", filepath.Join(ca, tlsutil.CAFile)).config("a")
	r, err := tlsutil.NewReloader(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	cfg := fastLoopback(t, "a")
	cfg.TLS, cfg.GossipKey = r, key
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	a := startNode(t, cfg)
	if !a.Self().TLS {
		t.Fatal("a secured node does not say so in its metadata")
	}

	plain := encryptedNode(t, "plain", key)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err = plain.Join(ctx, []string{a.GossipAddr()})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "over mutual TLS and this node without") {
		t.Fatalf("a node without TLS joined a secured one: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("a's log:\n%s\nrefusals %v", logs, a.Refusals().Snapshot())
		}
	})
	testkit.Eventually(t, 30*time.Second, "a to count and log the refusal", func() bool {
		return a.Refusals().Get(ListenerGossip, ReasonTLSMismatch) >= 1 &&
			regexp.MustCompile(`level=WARN .*refused peer traffic" listener=gossip reason=tls_mismatch remote=127\.0\.0\.1:\d+ peer=plain`).MatchString(logs.String())
	})
	time.Sleep(time.Second) // gossip rounds in which plain must stay out
	if _, ok := a.Member("plain"); ok {
		t.Fatal("a knows the node without TLS as a member")
	}
	if _, ok := plain.Member("a"); ok {
		t.Fatal("the node without TLS knows a as a member")
	}

	// The other way round: a secured node joining a plaintext one.
	cc2 := deploy(t, ca, "b", filepath.Join(ca, tlsutil.CAFile)).config("b")
	r2, err := tlsutil.NewReloader(cc2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r2.Close)
	cfg2 := fastLoopback(t, "b")
	cfg2.TLS, cfg2.GossipKey = r2, key
	b := startNode(t, cfg2)
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	_, err = b.Join(ctx, []string{plain.GossipAddr()})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "without TLS and this node with mutual TLS") {
		t.Fatalf("a secured node joined a plaintext one: %v", err)
	}
	// Two secured nodes join.
	join(t, b, a)
	testkit.Eventually(t, 30*time.Second, "a and b to see each other", func() bool { return aliveNames(a) == "a,b" && aliveNames(b) == "a,b" })
}
