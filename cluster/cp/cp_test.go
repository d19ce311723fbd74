package cp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

func testLogger(t testing.TB) *slog.Logger { return testkit.Logger(t) }

// member is one node of a test cluster: membership, raft transport, store.
type member struct {
	name  string
	node  *cluster.Node
	trans *Transport
	store *Store
	dir   string
}

func (m *member) close() {
	if m.store != nil {
		m.store.Close()
	}
	m.node.Close()
	m.trans.Close()
}

func (m *member) kill() {
	m.store.Close()
	m.node.Kill()
	m.trans.Close()
}

type testCluster struct {
	t testing.TB
	// leaderHeartbeat is every member's Config.LeaderHeartbeatTimeout.
	leaderHeartbeat time.Duration
	members         []*member
	expect          int
	// raftAddrs keeps each node's raft address, so that a node restarted
	// from its data directory is where the configuration says it is.
	raftAddrs map[string]string
	// now, if set, is every member's clock (Config.Now): the clock that
	// stamps lease commands, so a test can let leases expire when it
	// chooses rather than when a loaded machine happens to pause.
	now func() time.Time
	// secure, if set, gives each node its certificates: the peer RPC and
	// raft then run over mutual TLS, and raft's refusals are counted in
	// refusals.
	secure   func(name string) *tlsutil.Reloader
	refusals tlsutil.Refusals
	// refusalLog receives the refusals' log lines, of every member.
	refusalLog testkit.SyncBuffer
}

// testRaftConfig is LoopbackRaftConfig with timeouts sized for a loaded
// machine (the tests run on 2 shared cores with load averages above 10,
// where a goroutine may wait hundreds of milliseconds for a CPU): a
// leader keeps its place through such pauses, so a test that does not
// kill a leader sees one leader from start to end.
func testRaftConfig() *raft.Config {
	c := LoopbackRaftConfig()
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
	return c
}

// testClock is a clock that moves only when the test advances it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestCluster(t *testing.T, n, expect int) *testCluster {
	tc := &testCluster{t: t, expect: expect}
	for i := 1; i <= n; i++ {
		tc.add(fmt.Sprintf("n%d", i), t.TempDir())
	}
	return tc
}

// add starts a node with the given data directory and joins it to the
// first live member.
func (tc *testCluster) add(name, dir string) *member {
	t := tc.t
	t.Helper()
	if tc.raftAddrs == nil {
		tc.raftAddrs = map[string]string{}
	}
	addr := tc.raftAddrs[name]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	tcfg := TransportConfig{Bind: addr, Logger: testLogger(t)}
	var started atomic.Pointer[cluster.Node]
	if tc.secure != nil {
		tcfg.TLS = tc.secure(name)
		tcfg.Admit = func(ctx context.Context, peer string) error {
			if n := started.Load(); n != nil {
				return n.AdmitPeer(ctx, peer)
			}
			return errors.New("not started")
		}
		refusals := cluster.NewRefusalLog(&tc.refusals, slog.New(slog.NewTextHandler(&tc.refusalLog, nil)).With("node", name))
		tcfg.Refused = func(reason, remote, peer string, err error) {
			refusals.Refuse(cluster.ListenerRaft, reason, remote, peer, err.Error())
		}
	}
	trans, err := NewTransport(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.raftAddrs[name] = string(trans.LocalAddr())
	cfg := *cluster.DefaultLoopbackConfig()
	cfg.Name, cfg.RaftAddr, cfg.Logger, cfg.TLS = name, string(trans.LocalAddr()), testLogger(t).With("node", name), tcfg.TLS
	node, err := cluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	started.Store(node)
	m := &member{name: name, node: node, trans: trans, dir: dir}
	t.Cleanup(m.close)
	for _, o := range tc.members {
		if o.node != nil && o.alive() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := node.Join(ctx, []string{o.node.GossipAddr()})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	m.store, err = Open(Config{
		Node: node, Transport: trans, DataDir: dir, BootstrapExpect: tc.expect,
		VoterGrace: time.Second, ReconcileInterval: 100 * time.Millisecond,
		Raft: testRaftConfig(), Logger: cfg.Logger, Now: tc.now, LeaderHeartbeatTimeout: tc.leaderHeartbeat,
	})
	if err != nil {
		t.Fatal(err)
	}
	tc.members = append(tc.members, m)
	return m
}

func (m *member) alive() bool { return m.store != nil && m.store.raft.State() != raft.Shutdown }

func (tc *testCluster) leader() *member {
	tc.t.Helper()
	var l *member
	testkit.Eventually(tc.t, time.Minute, "a leader ready for reads", func() bool {
		for _, m := range tc.members {
			if m.alive() && m.store.raft.State() == raft.Leader {
				m.store.mu.Lock()
				ready := m.store.readyTerm == m.store.raft.CurrentTerm()
				m.store.mu.Unlock()
				if ready {
					l = m
					return true
				}
			}
		}
		return false
	})
	return l
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStoreAPIFromEveryNode(t *testing.T) {
	tc := newTestCluster(t, 3, 3)
	leader := tc.leader()
	ctx := ctxT(t)
	var follower *member
	for _, m := range tc.members {
		if m != leader {
			follower = m
			break
		}
	}
	w := leader.store.Watch("app/")
	defer w.Close()

	// Each write goes through checked: an answer lost on a loaded machine
	// (a leader deposed mid-commit, a forward whose reply never came) is
	// resolved by reading the key, never by sending the write blindly
	// again — a CAS repeated after it took would report a mismatch, and
	// the watch below would see it twice.
	fs := follower.store
	value := func(want string) func(KV, error) bool {
		return func(kv KV, err error) bool { return err == nil && string(kv.Value) == want }
	}
	gone := func(_ KV, err error) bool { return errors.Is(err, ErrNotFound) }
	v1, err := checked(t, ctx, fs, "app/a", value("1"), func() (uint64, error) { return fs.Put(ctx, "app/a", []byte("1")) })
	if err != nil {
		t.Fatal(err)
	}
	kv, err := leader.store.Get(ctx, "app/a")
	if err != nil || string(kv.Value) != "1" || kv.Version != v1 {
		t.Fatalf("get after put: %+v %v", kv, err)
	}
	if _, err := checked(t, ctx, fs, "app/a", value("x"), func() (uint64, error) { return fs.CompareAndSet(ctx, "app/a", v1+100, []byte("x")) }); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("CAS with a wrong version: %v", err)
	}
	v2, err := checked(t, ctx, fs, "app/a", value("2"), func() (uint64, error) { return fs.CompareAndSet(ctx, "app/a", v1, []byte("2")) })
	if err != nil || v2 <= v1 {
		t.Fatalf("CAS: %d %v", v2, err)
	}
	if _, err := checked(t, ctx, fs, "app/b", value("new"), func() (uint64, error) { return fs.CompareAndSet(ctx, "app/b", 0, []byte("new")) }); err != nil {
		t.Fatalf("CAS to create: %v", err)
	}
	if _, err := checked(t, ctx, fs, "app/b", value("again"), func() (uint64, error) { return fs.CompareAndSet(ctx, "app/b", 0, []byte("again")) }); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("CAS create of an existing key: %v", err)
	}
	if _, err := checked(t, ctx, fs, "app/a", gone, func() (uint64, error) { return 0, fs.Delete(ctx, "app/a", IfVersion(v1)) }); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("conditional delete: %v", err)
	}
	if _, err := checked(t, ctx, fs, "app/a", gone, func() (uint64, error) { return 0, fs.Delete(ctx, "app/a", IfVersion(v2)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := follower.store.Get(ctx, "app/a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	list, err := follower.store.List(ctx, "app/")
	if err != nil || len(list) != 1 || list[0].Key != "app/b" {
		t.Fatalf("list: %+v %v", list, err)
	}
	var got []string
	for len(got) < 4 {
		select {
		case e := <-w.C():
			got = append(got, fmt.Sprintf("%s:%s:%v", e.Key, e.Value, e.Deleted))
		case <-time.After(30 * time.Second):
			t.Fatalf("watch saw %v", got)
		}
	}
	if want := "app/a:1:false app/a:2:false app/b:new:false app/a::true"; strings.Join(got, " ") != want {
		t.Fatalf("watch saw %v, want %s", got, want)
	}
	// The status names the leader as it is now, and the follower's role
	// (polled: a leader elected since the last write may not have reached
	// the follower's view yet).
	var st Status
	var now *member
	testkit.Eventually(t, time.Minute, "the follower's status to name the leader", func() bool {
		now = tc.leader()
		st = follower.store.Status()
		role := "follower"
		if now == follower {
			role = "leader"
		}
		return st.Leader == now.name && st.Role == role && len(st.Servers) == 3
	})
}

// checked runs a write and settles an unknown outcome (ErrIndeterminate:
// the request reached a leader, the answer was lost) by looking, never by
// sending the write blindly again. First a marker write outside the
// test's keys must commit: raft commits in log order, and a leader
// commits the entries of earlier terms with its own first one, so once
// the marker has committed the lost write has either committed too or
// never will. Then a linearizable read of key: if took finds the write
// there, its version is the key's; if not, it is sent again.
func checked(t *testing.T, ctx context.Context, s *Store, key string, took func(KV, error) bool, write func() (uint64, error)) (uint64, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		v, err := write()
		if !errors.Is(err, ErrIndeterminate) || ctx.Err() != nil {
			return v, err
		}
		t.Logf("%s: outcome unknown (attempt %d): %v; settling it", key, attempt, err)
		for {
			// The marker's own retry is harmless: its value is not checked.
			_, merr := s.Put(ctx, "settle/"+key, []byte(fmt.Sprint(attempt)))
			if merr == nil {
				break
			}
			if !errors.Is(merr, ErrIndeterminate) || ctx.Err() != nil {
				t.Fatalf("marker write to settle %s: %v", key, merr)
			}
		}
		kv, gerr := s.Get(ctx, key)
		if gerr != nil && !errors.Is(gerr, ErrNotFound) {
			t.Fatalf("reading %s to settle an unknown outcome: %v", key, gerr)
		}
		if took(kv, gerr) {
			return kv.Version, nil
		}
	}
}

func TestBadInput(t *testing.T) {
	tc := newTestCluster(t, 1, 1)
	s := tc.leader().store
	ctx := ctxT(t)
	for _, tc := range []struct {
		err  error
		want error
	}{
		{func() error { _, err := s.Put(ctx, "", nil); return err }(), ErrInvalid},
		{func() error { _, err := s.Put(ctx, strings.Repeat("k", 2000), nil); return err }(), ErrTooLarge},
		{func() error { _, err := s.Put(ctx, "k", make([]byte, 2<<20)); return err }(), ErrTooLarge},
		{func() error { _, err := s.Acquire(ctx, "l", "", time.Second); return err }(), ErrInvalid},
		{func() error { _, err := s.Acquire(ctx, "l", "h", 0); return err }(), ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("got %v, want %v", tc.err, tc.want)
		}
	}
	if list := s.StaleList(""); len(list) != 0 {
		t.Fatalf("rejected writes left %v", list)
	}
}

// The leases run on a test clock: a lease expires when the test advances
// it past the TTL, never because the machine paused between two calls.
func TestLeasesAndFencing(t *testing.T) {
	clock := newTestClock()
	tc := &testCluster{t: t, expect: 3, now: clock.Now}
	for i := 1; i <= 3; i++ {
		tc.add(fmt.Sprintf("n%d", i), t.TempDir())
	}
	tc.leader()
	a, b := tc.members[0].store, tc.members[1].store
	ctx := ctxT(t)
	tokA, err := settled(func() (uint64, error) { return a.Acquire(ctx, "lock", "A", 300*time.Millisecond) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := settled(func() (uint64, error) { return b.Acquire(ctx, "lock", "B", time.Second) }); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second holder: %v", err)
	}
	if _, err := settled(func() (uint64, error) { return a.Put(ctx, "guarded", []byte("A1"), Fenced("lock", tokA)) }); err != nil {
		t.Fatalf("fenced write by the holder: %v", err)
	}
	if _, err := settled(func() (uint64, error) { return 0, a.Renew(ctx, "lock", "A", tokA, 300*time.Millisecond) }); err != nil {
		t.Fatal(err)
	}
	// Still held just before its TTL ends.
	clock.Advance(299 * time.Millisecond)
	if _, err := settled(func() (uint64, error) { return b.Acquire(ctx, "lock", "B", time.Second) }); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second holder before the TTL ends: %v", err)
	}
	// A pauses past its TTL; B takes over.
	clock.Advance(2 * time.Millisecond)
	tokB, err := settled(func() (uint64, error) { return b.Acquire(ctx, "lock", "B", 10*time.Second) })
	if err != nil {
		t.Fatalf("B acquiring the expired lease: %v", err)
	}
	if tokB <= tokA {
		t.Fatalf("token %d after %d: fencing tokens must increase", tokB, tokA)
	}
	if _, err := settled(func() (uint64, error) { return a.Put(ctx, "guarded", []byte("A2"), Fenced("lock", tokA)) }); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale holder's write: %v", err)
	}
	if _, err := settled(func() (uint64, error) { return 0, a.Renew(ctx, "lock", "A", tokA, time.Second) }); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("stale holder's renew: %v", err)
	}
	if _, err := settled(func() (uint64, error) { return b.Put(ctx, "guarded", []byte("B1"), Fenced("lock", tokB)) }); err != nil {
		t.Fatal(err)
	}
	if kv, _ := b.Get(ctx, "guarded"); string(kv.Value) != "B1" {
		t.Fatalf("guarded = %q", kv.Value)
	}
	retried := false
	if _, err := settled(func() (uint64, error) {
		err := b.Release(ctx, "lock", "B", tokB)
		if retried && errors.Is(err, ErrLeaseLost) {
			return 0, nil // an earlier attempt whose outcome was unknown released it
		}
		retried = true
		return 0, err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := settled(func() (uint64, error) { return a.Acquire(ctx, "lock", "A", time.Second) }); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
}

// settled retries op while its outcome is unknown or there is no leader
// (a loaded machine can depose a leader mid-commit), for up to a minute.
// Every op given is one whose retry is harmless: a holder may acquire its
// own lease again, renewing and fenced writes of the same value repeat.
func settled[T any](op func() (T, error)) (T, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := op()
		if !errors.Is(err, ErrIndeterminate) && !errors.Is(err, ErrNoLeader) || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill the leader: another takes over and every acknowledged key is there;
// a new node joins and becomes a voter in the dead one's place.
func TestFailoverAndVoterReplacement(t *testing.T) {
	tc := newTestCluster(t, 3, 3)
	leader := tc.leader()
	ctx := ctxT(t)
	for i := 0; i < 20; i++ {
		if _, err := tc.members[i%3].store.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	leader.kill()
	tc.add("n4", t.TempDir())
	l2 := tc.leader()
	if l2 == leader {
		t.Fatal("dead leader still leads")
	}
	list, err := l2.store.List(ctx, "k")
	if err != nil || len(list) != 20 {
		t.Fatalf("after failover: %d keys, %v", len(list), err)
	}
	testkit.Eventually(t, 15*time.Second, "n4 to replace the dead voter", func() bool {
		st := l2.store.Status()
		_, dead := st.Servers[leader.name]
		return st.Servers["n4"] == "voter" && !dead && len(st.Servers) == 3
	})
}

// A whole cluster stopped and started again from its data directories
// comes back with every key.
func TestRestartFromDataDirs(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	tc := &testCluster{t: t, expect: 3}
	for i, d := range dirs {
		tc.add(fmt.Sprintf("n%d", i+1), d)
	}
	ctx := ctxT(t)
	tc.leader()
	for i := 0; i < 50; i++ {
		if _, err := tc.members[0].store.Put(ctx, fmt.Sprintf("k%02d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A snapshot on one node, so restart covers both snapshot and log.
	testkit.Eventually(t, 5*time.Second, "n2 to apply every write", func() bool { return len(tc.members[1].store.StaleList("k")) == 50 })
	if err := tc.members[1].store.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for _, m := range tc.members {
		m.close()
	}
	tc2 := &testCluster{t: t, expect: 3, raftAddrs: tc.raftAddrs}
	for i, d := range dirs {
		tc2.add(fmt.Sprintf("n%d", i+1), d)
	}
	// n2 restored its snapshot before raft even started.
	if got := len(tc2.members[1].store.StaleList("k")); got != 50 {
		t.Fatalf("n2 restarted with %d keys from its snapshot", got)
	}
	tc2.leader()
	list, err := tc2.members[0].store.List(ctx, "k")
	if err != nil || len(list) != 50 {
		t.Fatalf("after restart: %d keys, %v", len(list), err)
	}
	for _, m := range tc2.members {
		testkit.Eventually(t, 5*time.Second, m.name+" to replay its log", func() bool { return len(m.store.StaleList("k")) == 50 })
	}
}

func TestForeignDataDirRefused(t *testing.T) {
	dir := t.TempDir()
	tc := &testCluster{t: t, expect: 1}
	m := tc.add("n1", dir)
	m.close()
	trans, _ := NewTCPTransport("127.0.0.1:0", "", testLogger(t))
	defer trans.Close()
	cfg := *cluster.DefaultLoopbackConfig()
	cfg.Name, cfg.Logger = "other", testLogger(t)
	node, err := cluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	_, err = Open(Config{Node: node, Transport: trans, DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "node-id") || !strings.Contains(err.Error(), `belongs to node "n1"`) {
		t.Fatalf("foreign data dir: %v", err)
	}
	// A corrupt log is refused with its path.
	os.WriteFile(dir+"/raft/node-id", []byte("other\n"), 0o644)
	segs, _ := filepath.Glob(dir + "/raft/log/*.seg")
	if len(segs) == 0 {
		t.Fatal("no log segment written")
	}
	for _, p := range segs {
		os.WriteFile(p, []byte("garbage"), 0o644)
	}
	_, err = Open(Config{Node: node, Transport: trans, DataDir: dir})
	if !errors.Is(err, ErrDamagedLog) || !strings.Contains(err.Error(), dir+"/raft/log") {
		t.Fatalf("corrupt log: %v", err)
	}
}

// Linearizable reads on the leader share leadership checks: reads that
// come while one is in flight wait for the next, which begins after they
// came. So a read still sees every write acknowledged before it began,
// and many concurrent reads cost fewer checks than reads.
func TestReadsShareLeadershipChecks(t *testing.T) {
	tc := newTestCluster(t, 3, 3)
	leader := tc.leader().store
	ctx := ctxT(t)
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := leader.Put(ctx, "k", []byte(strconv.FormatInt(i, 10))); err != nil {
				// Unknown outcome under load: the next write settles it.
				continue
			}
			acked.Store(i)
		}
	}()
	before := leader.verifies.Load()
	var reads atomic.Int64
	var rwg sync.WaitGroup
	for range 8 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for range 40 {
				floor := acked.Load()
				kv, err := leader.Get(ctx, "k")
				if errors.Is(err, ErrNotFound) && floor == 0 {
					continue
				}
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				reads.Add(1)
				if got, _ := strconv.ParseInt(string(kv.Value), 10, 64); got < floor {
					t.Errorf("read %d after %d was acknowledged", got, floor)
					return
				}
			}
		}()
	}
	rwg.Wait()
	close(stop)
	wg.Wait()
	checks := leader.verifies.Load() - before
	t.Logf("%d reads, %d leadership checks", reads.Load(), checks)
	if checks >= uint64(reads.Load()) {
		t.Errorf("%d concurrent reads made %d leadership checks: none shared", reads.Load(), checks)
	}
}

// A patient read (ListPatient) is confirmed by the heartbeats raft sends
// anyway, on the leader and forwarded from a follower: it sees every
// acknowledged write and costs no leadership check of its own. With one
// follower gone the other still makes a quorum; with both gone no read
// is confirmed.
func TestPatientReadsRideHeartbeats(t *testing.T) {
	tc := newTestCluster(t, 3, 3)
	leader := tc.leader()
	ctx := ctxT(t)
	var followers []*member
	for _, m := range tc.members {
		if m != leader {
			followers = append(followers, m)
		}
	}
	checksBefore, confirmedBefore := leader.store.verifies.Load(), leader.store.contacts.confirmedCount()
	read := func(m *member, want string) {
		t.Helper()
		kvs, err := m.store.ListPatient(ctx, "p/")
		if err != nil {
			t.Fatalf("patient read on %s: %v", m.name, err)
		}
		if len(kvs) != 1 || string(kvs[0].Value) != want {
			t.Fatalf("patient read on %s: %v, want p/k = %s", m.name, kvs, want)
		}
	}
	for i := range 5 {
		v := strconv.Itoa(i)
		if _, err := leader.store.Put(ctx, "p/k", []byte(v)); err != nil {
			t.Fatal(err)
		}
		read(leader, v)
		for _, f := range followers {
			read(f, v)
		}
	}
	checks := leader.store.verifies.Load() - checksBefore
	confirmed := leader.store.contacts.confirmedCount() - confirmedBefore
	t.Logf("15 patient reads: %d confirmed by heartbeats, %d leadership checks", confirmed, checks)
	if confirmed < 10 {
		t.Errorf("only %d of 15 patient reads were confirmed by heartbeats (%d by checks of their own)", confirmed, checks)
	}

	// Killed, not closed: a node that leaves the membership gracefully is
	// taken out of the configuration, and a leader alone in it is a
	// quorum by itself.
	followers[0].kill()
	if _, err := leader.store.Put(ctx, "p/k", []byte("after")); err != nil {
		t.Fatal(err)
	}
	read(leader, "after")

	followers[1].kill()
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if kvs, err := leader.store.ListPatient(short, "p/"); err == nil {
		t.Fatalf("a patient read without a quorum answered %v", kvs)
	}
}

// The contact record counts a quorum of the configuration's voters, this
// node included, in the wait's term and from its moment on.
func TestContactsQuorum(t *testing.T) {
	cfg := raft.Configuration{Servers: []raft.Server{
		{ID: "a", Suffrage: raft.Voter}, {ID: "b", Suffrage: raft.Voter},
		{ID: "c", Suffrage: raft.Voter}, {ID: "d", Suffrage: raft.Nonvoter},
	}}
	c := newContacts("a")
	c.start(func() raft.Configuration { return cfg })
	t0 := time.Unix(1000, 0)
	w := c.wait(5, t0)
	done := func() bool {
		select {
		case <-w.done:
			return true
		default:
			return false
		}
	}
	c.accepted("b", 5, t0.Add(-time.Millisecond)) // sent before the read came
	c.accepted("d", 5, t0.Add(time.Millisecond))  // not a voter
	c.accepted("c", 4, t0.Add(time.Millisecond))  // an earlier term
	if done() {
		t.Fatal("confirmed without a quorum of voters accepting appends sent after the read in its term")
	}
	c.accepted("c", 5, t0) // sent at the read's moment: counts
	if !done() {
		t.Fatal("a and c are a quorum of three voters")
	}
	// An older record never replaces a newer one.
	c.accepted("c", 5, t0.Add(-time.Second))
	if c.last["c"].sent != t0 {
		t.Fatalf("record went back to %v", c.last["c"].sent)
	}
	// Alone in the configuration, this node is its own quorum.
	cfg = raft.Configuration{Servers: []raft.Server{{ID: "a", Suffrage: raft.Voter}}}
	if w := c.wait(6, t0.Add(time.Hour)); w == nil {
		t.Fatal("nil wait")
	} else {
		select {
		case <-w.done:
		default:
			t.Fatal("a single voter waited for others")
		}
	}
	// A node that is not a voter never counts itself.
	cfg = raft.Configuration{Servers: []raft.Server{{ID: "a", Suffrage: raft.Nonvoter}, {ID: "b", Suffrage: raft.Voter}}}
	w = c.wait(6, t0.Add(time.Hour))
	if done() {
		t.Fatal("a non-voter confirmed itself")
	}
	c.cancel(w)
	if len(c.waiters) != 0 {
		t.Fatalf("%d waiters left after cancel", len(c.waiters))
	}
}

// With LeaderHeartbeatTimeout the leader runs raft with the longer
// heartbeat timeout (fewer heartbeats) and the followers with the
// shorter one (their detection of its death); a new leader takes the
// longer one, and the cluster still fails over.
func TestLeaderHeartbeatTimeout(t *testing.T) {
	tc := &testCluster{t: t, expect: 3, leaderHeartbeat: 2 * testRaftConfig().HeartbeatTimeout}
	for i := 1; i <= 3; i++ {
		tc.add(fmt.Sprintf("n%d", i), t.TempDir())
	}
	paced := func(leader *member) bool {
		for _, m := range tc.members {
			if !m.alive() {
				continue
			}
			want := testRaftConfig().HeartbeatTimeout
			if m == leader {
				want = tc.leaderHeartbeat
			}
			if got := m.store.raft.ReloadableConfig().HeartbeatTimeout; got != want {
				return false
			}
		}
		return true
	}
	leader := tc.leader()
	testkit.Eventually(t, time.Minute, "the leader on the longer timeout, the followers on the shorter", func() bool { return paced(leader) })
	ctx := ctxT(t)
	if _, err := leader.store.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	leader.kill()
	next := tc.leader()
	testkit.Eventually(t, time.Minute, "the new leader on the longer timeout", func() bool { return paced(next) })
	if _, err := next.store.Put(ctx, "k", []byte("w")); err != nil {
		t.Fatal(err)
	}

	// Out of range: refused with the field's name.
	for _, h := range []time.Duration{time.Millisecond, 10 * testRaftConfig().HeartbeatTimeout} {
		c := Config{Raft: testRaftConfig(), LeaderHeartbeatTimeout: h}
		var fe *config.FieldError
		if err := c.Validate(); !errors.As(err, &fe) || fe.Field != "LeaderHeartbeatTimeout" {
			t.Errorf("LeaderHeartbeatTimeout %v: %v, want a FieldError", h, err)
		}
	}
}
