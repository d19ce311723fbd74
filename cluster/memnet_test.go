package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// memCluster starts n nodes on an in-memory network, host 10.0.0.i for
// node ni, and joins them all through n1.
func memCluster(t *testing.T, net *memnet.Network, n int, opts ...func(*Config)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := 1; i <= n; i++ {
		nodes = append(nodes, startMemNode(t, net, i, opts...))
	}
	for _, nd := range nodes[1:] {
		join(t, nd, nodes[0])
	}
	want := allNames(n)
	for _, nd := range nodes {
		testkit.Eventually(t, 10*time.Second, nd.Name()+" to see everyone", func() bool { return aliveNames(nd) == want })
	}
	return nodes
}

func startMemNode(t *testing.T, net *memnet.Network, i int, opts ...func(*Config)) *Node {
	t.Helper()
	ip := fmt.Sprintf("10.0.0.%d", i)
	host := net.Host(ip)
	tr, err := host.Transport(7946)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastLoopback(t, fmt.Sprintf("n%d", i))
	cfg.Transport, cfg.Network, cfg.RPCAddr = tr, host, ip+":7947"
	cfg.ReconnectInterval = 200 * time.Millisecond
	for _, o := range opts {
		o(&cfg)
	}
	return startNode(t, cfg)
}

// patient gives failure detection and the bus's gap timeout the patience
// of a loaded machine, for tests about something other than failures and
// losses. With the test preset's timings, a node that waits a few hundred
// milliseconds for a CPU is suspected and declared failed (its
// connections are closed and the frames in them lost), and a message that
// arrived but is still queued behind others when the 200 ms gap timeout
// ends is reported missed; a connection whose hello waits past the dial
// timeout for the peer's goroutine fails, dropping the bus messages queued
// for it: any of these would be taken for a fault of what such a test
// tests.
func patient(c *Config) {
	c.GapTimeout, c.DialTimeout = 10*time.Second, 30*time.Second
	ml := *c.Memberlist
	ml.ProbeInterval, ml.ProbeTimeout, ml.SuspicionMult = 2*time.Second, 2*time.Second, 8
	c.Memberlist = &ml
}

func allNames(n int) string {
	var names []string
	for i := 1; i <= n; i++ {
		names = append(names, fmt.Sprintf("n%d", i))
	}
	return strings.Join(names, ",")
}

func newNet(t *testing.T, seed uint64) *memnet.Network {
	net := memnet.New(seed)
	t.Cleanup(func() { net.Close() })
	return net
}

// Partition six nodes into two halves: each half sees the other fail and
// keeps working; heal, and membership converges to all six again.
func TestPartitionAndHeal(t *testing.T) {
	net := newNet(t, 1)
	nodes := memCluster(t, net, 6)
	net.Partition([]string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}, []string{"10.0.0.4", "10.0.0.5", "10.0.0.6"})
	for i, nd := range nodes {
		want := "n1,n2,n3"
		if i >= 3 {
			want = "n4,n5,n6"
		}
		testkit.Eventually(t, 10*time.Second, nd.Name()+" to see only its half", func() bool { return aliveNames(nd) == want })
	}
	// Each half still carries bus messages.
	var rec recorder
	nodes[2].Bus().Subscribe("t", &rec)
	if err := nodes[0].Bus().Publish("t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "delivery within a half", func() bool { n, _ := rec.counts(); return n == 1 })

	net.Heal()
	for _, nd := range nodes {
		testkit.Eventually(t, 15*time.Second, nd.Name()+" to see all six again", func() bool { return aliveNames(nd) == allNames(6) })
	}
}

// Every bus frame may be duplicated and delayed by up to 20 ms (so
// reordered): each message is still delivered exactly once, in order, and
// nothing is reported missed.
func TestBusExactlyOnceUnderDuplicationAndReordering(t *testing.T) {
	net := newNet(t, 7)
	nodes := memCluster(t, net, 3, patient)
	net.SetFaults(memnet.Faults{
		DuplicateRate: 0.3, DelayMax: 20 * time.Millisecond,
		Match: func(tr memnet.Traffic) bool { return tr.Kind == memnet.Frame && tr.Frame.Type == rpcBusOneway },
	})
	recs := subscribeAll(nodes, "inv")
	events := watchEvents(t, nodes)
	const perSender = 200
	var wg sync.WaitGroup
	for _, sender := range nodes[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perSender; i++ {
				if err := sender.Bus().Publish("inv", []byte(fmt.Sprint(i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	// n3 hears both senders; n1 and n2 hear each other.
	want := []int{perSender, perSender, 2 * perSender}
	for i, r := range recs {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
			if n, _ := r.counts(); n >= want[i] {
				break
			}
			if time.Now().After(deadline) {
				r.mu.Lock()
				t.Fatalf("timed out waiting for %d messages at n%d: %d, missed %v; network %+v; %s; membership events %v",
					want[i], i+1, len(r.msgs), r.misses, net.Stats().Frames, transportStats(nodes), events())
			}
		}
	}
	// Every delayed copy, late duplicates included, has reached its receiver.
	testkit.Eventually(t, time.Minute, "no bus frame in flight", func() bool { return net.Stats().Frames.InFlight() == 0 })
	for i, r := range recs {
		r.mu.Lock()
		next := map[string]uint64{}
		for _, m := range r.msgs {
			if m.Seq != next[m.From]+1 || string(m.Payload) != fmt.Sprint(m.Seq-1) {
				t.Fatalf("n%d: from %s got #%d after #%d", i+1, m.From, m.Seq, next[m.From])
			}
			next[m.From] = m.Seq
		}
		if len(r.msgs) != want[i] || len(r.misses) != 0 {
			t.Fatalf("n%d: %d messages (want %d), misses %v; %s; membership events %v", i+1, len(r.msgs), want[i], r.misses, transportStats(nodes), events())
		}
		r.mu.Unlock()
	}
	if st := net.Stats(); st.Duplicated == 0 {
		t.Fatal("the network duplicated nothing; the test proves nothing")
	}
}

// transportStats sums up, per node, what the bus and the peer RPC did:
// the part of a failure's story that the bus's own misses do not tell
// (sends that failed, dials that failed, connections accepted).
func transportStats(nodes []*Node) string {
	var parts []string
	for _, nd := range nodes {
		b, r := nd.Bus().Stats(), nd.RPC().Stats()
		parts = append(parts, fmt.Sprintf("%s: bus sent-errors %d received %d duplicates %d; rpc dials %d dial-errors %d accepted %d protocol-errors %d",
			nd.Name(), b.SendErrors.Load(), b.Received.Load(), b.Duplicates.Load(),
			r.Dials.Load(), r.DialErrors.Load(), r.ConnsAccepted.Load(), r.ProtocolErrors.Load()))
	}
	return strings.Join(parts, "; ")
}

// watchEvents records the membership events every node sees from now on
// (a member declared failed and back, say), for a failure's message.
func watchEvents(t *testing.T, nodes []*Node) func() []string {
	var mu sync.Mutex
	var seen []string
	var wg sync.WaitGroup
	var subs []*Subscription
	for _, nd := range nodes {
		sub := nd.Subscribe()
		subs = append(subs, sub)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range sub.C() {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s saw %s %v", nd.Name(), e.Member.Name, e.Type))
				mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() {
		for _, sub := range subs {
			sub.Close()
		}
		wg.Wait()
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func subscribeAll(nodes []*Node, topic string) []*recorder {
	recs := make([]*recorder, len(nodes))
	for i, nd := range nodes {
		recs[i] = &recorder{}
		nd.Bus().Subscribe(topic, recs[i])
	}
	return recs
}

// dropSeq makes the network drop the bus frames carrying message #seq.
func dropSeq(net *memnet.Network, seq uint64) {
	net.SetFaults(memnet.Faults{
		DropRate: 1,
		Match: func(tr memnet.Traffic) bool {
			if tr.Kind != memnet.Frame || tr.Frame.Type != rpcBusOneway {
				return false
			}
			envs, err := decodeBusFrame(tr.Frame.Body)
			return err == nil && slices.ContainsFunc(envs, func(e envelope) bool { return e.Seq == seq })
		},
	})
}

// A message lost in the middle is reported as missed once the next one
// shows the gap; the rest are delivered.
func TestBusDroppedMessageReportsMissed(t *testing.T) {
	net := newNet(t, 3)
	nodes := memCluster(t, net, 3)
	recs := subscribeAll(nodes, "inv")
	dropSeq(net, 5)
	for i := 0; i < 10; i++ {
		nodes[0].Bus().Publish("inv", nil)
	}
	for _, r := range recs[1:] {
		testkit.Eventually(t, 5*time.Second, "9 messages and a miss", func() bool {
			n, m := r.counts()
			return n == 9 && m == 1
		})
		if m := r.misses[0]; m.From != "n1" || m.Topic != "inv" || m.Reason != MissedGap {
			t.Fatalf("miss: %+v", m)
		}
	}
}

// The last message is lost, so no later message shows a gap: the periodic
// exchange of latest numbers finds it.
func TestBusLostLastMessageFoundByExchange(t *testing.T) {
	net := newNet(t, 4)
	nodes := memCluster(t, net, 3)
	recs := subscribeAll(nodes, "inv")
	dropSeq(net, 3)
	for i := 0; i < 3; i++ {
		nodes[0].Bus().Publish("inv", nil)
	}
	for _, r := range recs[1:] {
		testkit.Eventually(t, 10*time.Second, "2 messages and a miss", func() bool {
			n, m := r.counts()
			return n == 2 && m == 1
		})
		if m := r.misses[0]; m.From != "n1" || m.Reason != MissedGap {
			t.Fatalf("miss: %+v", m)
		}
	}
}

// A member that fails and comes back may have missed messages: both sides
// are told.
func TestBusMemberRejoinedReportsMissed(t *testing.T) {
	net := newNet(t, 5)
	nodes := memCluster(t, net, 3)
	recs := subscribeAll(nodes, "inv")
	net.Isolate("10.0.0.3")
	testkit.Eventually(t, 10*time.Second, "n1 and n3 to see each other fail", func() bool {
		m3, _ := nodes[0].Member("n3")
		m1, _ := nodes[2].Member("n1")
		return m3.State == StateFailed && m1.State == StateFailed
	})
	nodes[0].Bus().Publish("inv", nil) // n3 misses this one
	net.Heal()
	for _, nd := range nodes {
		testkit.Eventually(t, 15*time.Second, nd.Name()+" to see all three", func() bool { return aliveNames(nd) == allNames(3) })
	}
	hasMiss := func(r *recorder, from string, reason MissedReason) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, m := range r.misses {
			if m.From == from && m.Reason == reason {
				return true
			}
		}
		return false
	}
	testkit.Eventually(t, 5*time.Second, "n1 told that n3 rejoined", func() bool { return hasMiss(recs[0], "n3", MissedRejoined) })
	testkit.Eventually(t, 5*time.Second, "n3 told that n1 rejoined", func() bool { return hasMiss(recs[2], "n1", MissedRejoined) })
}

// PublishSync names the member that cannot acknowledge.
func TestPublishSyncReportsUnreachable(t *testing.T) {
	net := newNet(t, 6)
	nodes := memCluster(t, net, 3)
	recs := subscribeAll(nodes, "inv")
	net.SetFaults(memnet.Faults{DropRate: 1, Match: func(tr memnet.Traffic) bool {
		return tr.Kind == memnet.Frame && tr.To == "10.0.0.3" && tr.Frame.Type == rpcBusSync
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	notAcked, err := nodes[0].Bus().PublishSync(ctx, "inv", []byte("x"))
	if err != nil || strings.Join(notAcked, ",") != "n3" {
		t.Fatalf("not acked by %v (err %v), want [n3]", notAcked, err)
	}
	if n, _ := recs[1].counts(); n != 1 {
		t.Fatalf("n2 had not delivered when PublishSync returned")
	}
}

// A sender that restarts under the same name is a new incarnation: its
// receivers are told they may have missed what the old one sent.
func TestBusSenderRestartReportsMissed(t *testing.T) {
	net := newNet(t, 8)
	nodes := memCluster(t, net, 2)
	recs := subscribeAll(nodes, "inv")
	nodes[1].Bus().Publish("inv", nil)
	testkit.Eventually(t, 5*time.Second, "first message", func() bool { n, _ := recs[0].counts(); return n == 1 })
	nodes[1].Kill()
	testkit.Eventually(t, 10*time.Second, "n1 to see n2 fail", func() bool {
		m, _ := nodes[0].Member("n2")
		return m.State == StateFailed
	})
	n2 := startMemNode(t, net, 2)
	join(t, n2, nodes[0])
	testkit.Eventually(t, 10*time.Second, "n2 back", func() bool { return aliveNames(nodes[0]) == "n1,n2" })
	n2.Bus().Publish("inv", nil)
	testkit.Eventually(t, 5*time.Second, "second message and misses", func() bool {
		n, m := recs[0].counts()
		return n == 2 && m >= 1
	})
	recs[0].mu.Lock()
	defer recs[0].mu.Unlock()
	var reasons []string
	for _, m := range recs[0].misses {
		reasons = append(reasons, string(m.Reason))
	}
	if !strings.Contains(strings.Join(reasons, ","), string(MissedRestart)) {
		t.Fatalf("misses %v, want a restart", reasons)
	}
}

var _ wire.Network = (*memnet.Host)(nil)
