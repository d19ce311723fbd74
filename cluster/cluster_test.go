package cluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

func testLogger(t testing.TB) *slog.Logger { return testkit.Logger(t) }

// fastLoopback is the loopback preset tightened further for tests: the
// failure-detection tests wait for a failure within seconds.
func fastLoopback(t testing.TB, name string) Config {
	cfg := *DefaultLoopbackConfig()
	ml := *cfg.Memberlist
	ml.ProbeInterval, ml.ProbeTimeout = 200*time.Millisecond, 100*time.Millisecond
	ml.PushPullInterval = 300 * time.Millisecond
	cfg.Memberlist = &ml
	cfg.Name = name
	cfg.GapTimeout = 200 * time.Millisecond
	cfg.Logger = testLogger(t)
	return cfg
}

func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func join(t testing.TB, n *Node, seed *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Join(ctx, []string{seed.GossipAddr()}); err != nil {
		t.Fatalf("%s join: %v", n.Name(), err)
	}
}

func aliveNames(n *Node) string {
	var names []string
	for _, m := range n.Members() {
		if m.State == StateAlive {
			names = append(names, m.Name)
		}
	}
	return strings.Join(names, ",")
}

// recorder is a bus subscriber that remembers what it got.
type recorder struct {
	mu     sync.Mutex
	msgs   []Message
	misses []Missed
}

func (r *recorder) Deliver(m Message) { r.mu.Lock(); r.msgs = append(r.msgs, m); r.mu.Unlock() }
func (r *recorder) Missed(m Missed)   { r.mu.Lock(); r.misses = append(r.misses, m); r.mu.Unlock() }

func (r *recorder) counts() (msgs, misses int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs), len(r.misses)
}

// Three nodes over real UDP/TCP sockets on loopback: they form a cluster,
// see each other's metadata, carry bus messages, and see a killed node fail
// and a closed one leave.
func TestClusterOverLoopbackSockets(t *testing.T) {
	var nodes []*Node
	for i := 1; i <= 3; i++ {
		cfg := fastLoopback(t, fmt.Sprintf("n%d", i))
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", 18000+i)
		// The events below must be exactly these: a node declared failed
		// and back because the machine paused it (the fast preset's
		// 100 ms probes, under load) would add some, and its bus messages
		// would be reported missed.
		patient(&cfg)
		nodes = append(nodes, startNode(t, cfg))
	}
	sub := nodes[0].Subscribe()
	defer sub.Close()
	join(t, nodes[1], nodes[0])
	join(t, nodes[2], nodes[1])
	for _, n := range nodes {
		testkit.Eventually(t, 5*time.Second, n.Name()+" to see 3 members", func() bool { return aliveNames(n) == "n1,n2,n3" })
	}
	m, ok := nodes[0].Member("n3")
	if !ok || m.HTTP != "127.0.0.1:18003" || m.CacheMode != CacheModeLocal || m.RPC == "" {
		t.Fatalf("n1's view of n3's metadata: %+v", m)
	}

	var rec recorder
	nodes[2].Bus().Subscribe("inv", &rec)
	for i := 0; i < 100; i++ {
		if err := nodes[0].Bus().Publish("inv", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 5*time.Second, "100 messages at n3", func() bool { n, _ := rec.counts(); return n == 100 })
	for i, msg := range rec.msgs {
		if msg.Seq != uint64(i+1) || msg.Payload[0] != byte(i) || msg.From != "n1" {
			t.Fatalf("message %d: %+v", i, msg)
		}
	}
	// A deadline for a loaded machine, where a goroutine can wait seconds
	// for a CPU; on a quiet one both steps take milliseconds.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	notAcked, err := nodes[0].Bus().PublishSync(ctx, "inv", []byte("sync"))
	if err != nil || len(notAcked) != 0 {
		t.Fatalf("PublishSync: not acked by %v, err %v", notAcked, err)
	}
	if n, _ := rec.counts(); n != 101 {
		t.Fatalf("PublishSync returned before n3 delivered (%d messages)", n)
	}

	if err := nodes[1].UpdateMeta(ctx, func(m *Meta) { m.Raft = "127.0.0.1:9999" }); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "n1 to see n2's new metadata", func() bool {
		m, _ := nodes[0].Member("n2")
		return m.Raft == "127.0.0.1:9999"
	})
	nodes[2].Kill()
	testkit.Eventually(t, 5*time.Second, "n3 marked failed", func() bool {
		m, _ := nodes[0].Member("n3")
		return m.State == StateFailed
	})
	if err := nodes[1].Close(); err != nil {
		t.Fatalf("n2 close: %v", err)
	}
	testkit.Eventually(t, 5*time.Second, "n2 marked left", func() bool {
		m, _ := nodes[0].Member("n2")
		return m.State == StateLeft
	})
	var got []string
	timeout := time.After(5 * time.Second)
	for len(got) < 5 {
		select {
		case e := <-sub.C():
			got = append(got, e.Type.String()+" "+e.Member.Name)
		case <-timeout:
			t.Fatalf("events so far: %v", got)
		}
	}
	if want := "join n2,join n3,update n2,fail n3,leave n2"; strings.Join(got, ",") != want {
		t.Fatalf("events %v, want %q", got, want)
	}
}

// Nodes started with different cache modes form one cluster: the mode is
// the cluster's (l2cache.ModeKeeper), not a condition of membership.
func TestNodesOfOtherModesJoin(t *testing.T) {
	a := startNode(t, fastLoopback(t, "a"))
	cfg := fastLoopback(t, "b")
	cfg.CacheMode = CacheModeDistributed
	b := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Join(ctx, []string{a.GossipAddr()}); err != nil {
		t.Fatalf("join across modes: %v", err)
	}
	testkit.Eventually(t, 30*time.Second, "a to see b", func() bool { return aliveNames(a) == "a,b" })
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Name = "" }, "node name"},
		{func(c *Config) { c.Name = strings.Repeat("x", 65) }, "node name"},
		{func(c *Config) { c.CacheMode = "far" }, `CacheMode "far"`},
		{func(c *Config) { c.BindAddr = "localhost" }, `BindAddr "localhost": want host:port`},
		{func(c *Config) { c.BindAddr = "127.0.0.1:99999" }, "BindAddr"},
		{func(c *Config) { c.AdvertiseAddr = ":1" }, "AdvertiseAddr"},
	} {
		cfg := fastLoopback(t, "x")
		tc.mut(&cfg)
		if _, err := Start(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error about %q", err, tc.want)
		}
	}
}

func TestCloseTwice(t *testing.T) {
	n := startNode(t, fastLoopback(t, "a"))
	sub := n.Subscribe()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if _, ok := <-sub.C(); ok {
		t.Fatal("subscription still open after Close")
	}
	if err := n.Bus().Publish("t", nil); err != ErrClosed {
		t.Fatalf("publish after close: %v", err)
	}
}

// memberlist's lines reach slog at their level, except a send on the
// socket this process has just closed, which is routine at shutdown.
func TestMemberlistLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	counts := &tlsutil.Refusals{}
	refusals := newRefusals(counts, log, time.Now)
	l := memberlistLogger(log, refusals)
	for _, c := range []struct{ line, want string }{
		{"[ERR] memberlist: Decrypt packet failed: no installed keys could decrypt the message from=127.0.0.9:7001", "WARN.*refused peer traffic.*listener=gossip reason=unknown_key remote=127.0.0.9:7001"},
		{"[ERR] memberlist: failed to receive: encryption is configured but remote state is not encrypted from=127.0.0.9:7002", "WARN.*reason=not_encrypted remote=127.0.0.9:7002"},
		{"[ERR] memberlist: Failed to send gossip to 127.0.0.1:7946: write udp 127.0.0.1:7946->127.0.0.1:7956: use of closed network connection", "DEBUG"},
		{"[ERR] memberlist: Failed fallback TCP ping: timeout 500ms: read tcp 127.0.0.1:48266->127.0.0.171:33939: i/o timeout", "WARN"},
		{"[ERR] memberlist: Failed to receive: bad message", "ERROR"},
		{"[WARN] memberlist: Refuting a suspect message", "WARN"},
	} {
		buf.Reset()
		l.Print(c.line)
		if got := buf.String(); !regexp.MustCompile("level=" + c.want).MatchString(got) {
			t.Errorf("%q: logged %q, want level %s", c.line, got, c.want)
		}
	}
	if a, b := counts.Get(ListenerGossip, ReasonUnknownKey), counts.Get(ListenerGossip, ReasonNotEncrypted); a != 1 || b != 1 {
		t.Errorf("gossip refusals counted: unknown_key %d, not_encrypted %d, want 1 and 1", a, b)
	}
}

// The record of members is bounded: of members that came and went under
// names never seen again, a node keeps at most MaxDeparted (the latest),
// and none once DepartedRetention has passed since they departed; the
// alive ones stay. Over real memberlist sockets.
func TestDepartedMembersPruned(t *testing.T) {
	var skew atomic.Int64 // added to the node's clock
	cfg := fastLoopback(t, "a")
	cfg.MaxDeparted, cfg.ReconnectTimeout, cfg.DepartedRetention = 3, time.Minute, time.Minute
	cfg.ReconnectInterval = 50 * time.Millisecond
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	a := startNode(t, cfg)
	b := startNode(t, fastLoopback(t, "b"))
	join(t, b, a)
	for i := 1; i <= 6; i++ {
		name := fmt.Sprintf("eph-%d", i)
		e := startNode(t, fastLoopback(t, name))
		join(t, e, a)
		testkit.Eventually(t, 30*time.Second, "a to see "+name, func() bool {
			m, ok := a.Member(name)
			return ok && m.State == StateAlive
		})
		if i == 6 {
			e.Kill()
		} else {
			e.Close()
		}
		testkit.Eventually(t, 30*time.Second, "a to see "+name+" depart", func() bool {
			m, ok := a.Member(name)
			return ok && (m.State == StateLeft || m.State == StateFailed)
		})
		if got := len(a.Members()); got > 2+3 {
			t.Fatalf("after %s departed a keeps %d member records: %v", name, got, a.Members())
		}
	}
	var names []string
	for _, m := range a.Members() {
		names = append(names, m.Name+"="+string(m.State))
	}
	if got := strings.Join(names, ","); got != "a=alive,b=alive,eph-4=left,eph-5=left,eph-6=failed" {
		t.Fatalf("members: %s", got)
	}
	skew.Store(int64(2 * time.Minute))
	testkit.Eventually(t, 30*time.Second, "the departed to be forgotten", func() bool { return len(a.Members()) == 2 })
	if aliveNames(a) != "a,b" {
		t.Fatalf("alive after the pruning: %s", aliveNames(a))
	}
}

// TestGossipAddrAfterMemberlistForgetsSelf: memberlist drops its own node
// from its map GossipToTheDeadTime after leaving, while probing goes on
// until Shutdown; a Close slowed past that (32 nodes under the race
// detector at load 36) had the reconnect loop's GossipAddr dereference
// nil. GossipAddr is fixed at Start.
func TestGossipAddrAfterMemberlistForgetsSelf(t *testing.T) {
	net := newNet(t, 7)
	short := func(c *Config) {
		ml := *c.Memberlist
		ml.GossipToTheDeadTime = 10 * time.Millisecond
		c.Memberlist = &ml
	}
	a := startMemNode(t, net, 1, short)
	b := startMemNode(t, net, 2, short)
	join(t, b, a)
	addr := b.GossipAddr()
	if err := b.ml.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	forgot := func() (gone bool) {
		defer func() {
			if recover() != nil {
				gone = true
			}
		}()
		b.ml.LocalNode()
		return false
	}
	testkit.Eventually(t, 10*time.Second, "memberlist to forget its own node after leaving", forgot)
	if got := b.GossipAddr(); got != addr {
		t.Fatalf("GossipAddr after leaving = %q, want %q", got, addr)
	}
	b.rejoinSeeds(context.Background()) // resolves the seeds without its own address
}
