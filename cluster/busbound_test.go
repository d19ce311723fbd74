package cluster

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster/rpc"
	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// forger is a process that speaks the peer RPC to a node under any name
// it likes, as anyone who can reach the RPC port can without TLS.
func forger(t *testing.T, name string, target *Node) *rpc.Node {
	t.Helper()
	r, err := rpc.New(rpc.Config{Name: name, Network: &wire.TCP{}, Logger: testLogger(t),
		Resolve: func(string) (string, bool) { return target.Self().RPC, true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	// Connect now (a call of a type nobody serves), so that one-way
	// messages go straight out rather than into the dial backlog.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Call(ctx, target.Name(), "nothing", nil); err == nil {
		t.Fatal("a call of no type answered")
	}
	return r
}

func envelopeBytes(t testing.TB, env envelope) []byte {
	t.Helper()
	b, err := msgpack.Marshal(&env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// twoNodes starts two members whose failure detector does not fire on a
// loaded machine: these tests are about what a node does with the
// messages of its members and of others, so b must stay a member of a's
// until it leaves. (With the tests' fast detector, a starved for a second
// by other processes declared b failed and dropped its connections,
// the forger's under b's name among them: "notify a: connection closed".)
// b's departure is its leave notice, which needs no probe.
func twoNodes(t *testing.T) (a, b *Node) {
	steady := func(name string) Config {
		cfg := fastLoopback(t, name)
		ml := *cfg.Memberlist
		ml.ProbeInterval, ml.ProbeTimeout, ml.SuspicionMult = time.Second, time.Second, 20
		cfg.Memberlist = &ml
		return cfg
	}
	a, b = startNode(t, steady("a")), startNode(t, steady("b"))
	join(t, b, a)
	testkit.Eventually(t, 10*time.Second, "a and b alive on both", func() bool { return aliveNames(a) == "a,b" && aliveNames(b) == "a,b" })
	return a, b
}

// A bus message from a node that is not a member is refused (a
// synchronous one answered with an error), logged and counted; one that
// claims a member's name with an incarnation ahead of the member's (which
// would make the receiver drop the member's real messages as older) is
// refused too, and the member's messages still arrive.
func TestBusRefusesForgedMessages(t *testing.T) {
	a, b := twoNodes(t)
	rec := &recorder{}
	defer a.Bus().Subscribe("inv", rec)()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	mallory := forger(t, "mallory", a)
	if err := mallory.Notify("a", rpcBusOneway, envelopeBytes(t, envelope{Inc: 1, Topic: "inv", Seq: 1, Payload: []byte("forged")})); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Call(ctx, "a", rpcBusSync, envelopeBytes(t, envelope{Inc: 1, Topic: "inv", Seq: 2})); err == nil {
		t.Fatal("a synchronous message from a non-member was acknowledged")
	}
	testkit.Eventually(t, 10*time.Second, "two refusals of mallory", func() bool {
		return a.Refusals().Get(ListenerBus, ReasonNotMember) == 2
	})

	fake := forger(t, "b", a) // b's name, plaintext: nothing stops the claim at the RPC
	if _, err := fake.Call(ctx, "a", rpcBusSync, envelopeBytes(t, envelope{Inc: math.MaxInt64, Topic: "inv", Seq: 1})); err == nil {
		t.Fatal("a message with a forged incarnation was acknowledged")
	}
	if got := a.Refusals().Get(ListenerBus, ReasonIncarnation); got != 1 {
		t.Fatalf("incarnation refusals: %d, want 1", got)
	}
	fake.Close()
	// The same for memberlist's push/pull exchange: a forged incarnation
	// is refused; a non-member's exchange is ignored and keeps nothing.
	for _, st := range []exchangeState{
		{Name: "b", Inc: math.MaxInt64, Seqs: map[string]uint64{"inv": 9}},
		{Name: "mallory", Inc: 1, Seqs: map[string]uint64{"inv": 9}},
	} {
		buf, err := msgpack.Marshal(&st)
		if err != nil {
			t.Fatal(err)
		}
		a.Bus().mergeState(buf)
	}
	if got := a.Refusals().Get(ListenerBus, ReasonIncarnation); got != 2 {
		t.Fatalf("incarnation refusals after a forged exchange: %d, want 2", got)
	}
	a.Bus().mu.Lock()
	_, kept := a.Bus().recv.senders["mallory"]
	a.Bus().mu.Unlock()
	if st := a.Bus().state(); kept || st.streams != 0 {
		t.Fatalf("forged exchanges left state: mallory kept %v, %+v", kept, st)
	}
	// The real b is still heard, in order, from its first message.
	for i := range 3 {
		if _, err := b.Bus().PublishSync(ctx, "inv", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "b's three messages at a", func() bool { m, _ := rec.counts(); return m == 3 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, m := range rec.msgs {
		if m.From != "b" {
			t.Fatalf("a delivered a message from %s", m.From)
		}
	}
	if len(rec.misses) != 0 {
		t.Fatalf("a reported misses: %+v", rec.misses)
	}
}

// Under a flood of forged senders, of topics under a member's name and
// incarnation, of messages held behind gaps and of oversized topic names,
// what the bus keeps stays within its limits per sender, and the excess
// is counted as refused.
func TestBusStateBoundedUnderFlood(t *testing.T) {
	a, b := twoNodes(t)
	inc := b.Self().Incarnation
	// 500 made-up senders: none gets any state. Each ghost's message must
	// reach a's bus and be refused there. On a machine at load 30-50 a
	// ghost's connection sometimes fails before that (a closed it during
	// the hello, which it did not read within the dial timeout: 1 of 40
	// loop runs; and one minute for all 500 calls ran out once): such a
	// ghost dials again, up to five times.
	redials := 0
	for i := range 500 {
		for try := 1; ; try++ {
			f := forger(t, fmt.Sprint("ghost-", i), a)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := f.Call(ctx, "a", rpcBusSync, envelopeBytes(t, envelope{Inc: 1, Topic: "t", Seq: 5}))
			cancel()
			f.Close()
			if err == nil {
				t.Fatal("a ghost's message was acknowledged")
			}
			if strings.Contains(err.Error(), errRefused.Error()) {
				break
			}
			if try == 5 {
				t.Fatalf("ghost %d's message failed %d times otherwise than refused by a's bus: %v", i, try, err)
			}
			redials++
			t.Logf("ghost %d dials again: %v", i, err)
		}
	}
	if redials > 0 {
		t.Logf("%d ghost connections failed before the bus and were dialed again", redials)
	}
	// Under b's name and incarnation (plaintext RPC lets anyone claim it):
	// 5,000 topics, long topic names, and gaps holding big payloads.
	fake := forger(t, "b", a)
	payload := make([]byte, 64<<10)
	for i := range 5000 {
		if err := fake.Notify("a", rpcBusOneway, envelopeBytes(t, envelope{Inc: inc, Topic: fmt.Sprint("topic-", i), Seq: 2})); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		long := string(make([]byte, 300)) + fmt.Sprint(i)
		if err := fake.Notify("a", rpcBusOneway, envelopeBytes(t, envelope{Inc: inc, Topic: long, Seq: 1})); err != nil {
			t.Fatal(err)
		}
	}
	// 64 MB in all, paced 3 MB at a time by what a has taken in: a
	// reader starved for the connection's write timeout (10 s) would be
	// disconnected, which is not what this test is about.
	sent := uint64(500 + 5000 + 100)
	for seq := uint64(10); seq < 1000; seq++ {
		if err := fake.Notify("a", rpcBusOneway, envelopeBytes(t, envelope{Inc: inc, Topic: "topic-1", Seq: seq, Payload: payload})); err != nil {
			t.Fatal(err)
		}
		if sent++; seq%50 == 0 {
			awaitReceived(t, a, fake, sent)
		}
	}
	// The peer RPC forgot the ghosts once their connections closed.
	testkit.Eventually(t, 10*time.Second, "a's RPC keeps no ghost peers", func() bool { return a.RPC().Peers() <= 2 })
	lim := defaultBusLimits
	testkit.Eventually(t, 60*time.Second, "the flood processed", func() bool {
		return a.Bus().Stats().Received.Load() >= 500+5000+100+990
	})
	st := a.Bus().state()
	t.Logf("after the flood: %+v; refused: not_member %d, limit %d", st, a.Refusals().Get(ListenerBus, ReasonNotMember), a.Refusals().Get(ListenerBus, ReasonLimit))
	if st.senders > 1 || st.streams > lim.topics || st.held > lim.held || st.heldBytes > lim.heldBytes {
		t.Fatalf("bus state past its limits: %+v (limits %+v)", st, lim)
	}
	if got := a.Refusals().Get(ListenerBus, ReasonNotMember); got != 500 {
		t.Fatalf("not_member refusals: %d, want 500", got)
	}
	if got := a.Refusals().Get(ListenerBus, ReasonLimit); got < 5000-uint64(lim.topics)+100 {
		t.Fatalf("limit refusals: %d, want at least %d", got, 5000-lim.topics+100)
	}
	// When b departs, its state goes with it (here: b is kept among the
	// recently departed, its held messages delivered).
	b.Close()
	testkit.Eventually(t, 30*time.Second, "a sees b gone", func() bool { return aliveNames(a) == "a" })
	testkit.Eventually(t, 10*time.Second, "b's held messages released", func() bool { return a.Bus().state().held == 0 })
}

// awaitReceived waits (a minute) for a's bus to have taken in sent
// messages, and says where the flood stands if it has not: what a's
// connection layer took in and accepted, and what the forger sent and
// dialed (a one-way frame is lost with a connection that closes).
func awaitReceived(t *testing.T, a *Node, fake *rpc.Node, sent uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for a.Bus().Stats().Received.Load() < sent {
		if time.Now().After(deadline) {
			as, fs := a.RPC().Stats(), fake.Stats()
			t.Fatalf("a's bus took in %d of the %d messages sent in a minute; a's RPC: %d one-way frames received, %d connections accepted, %d protocol errors, %d peers; the forger: %d notifies, %d dials (%d failed)",
				a.Bus().Stats().Received.Load(), sent, as.NotifyReceived.Load(), as.ConnsAccepted.Load(), as.ProtocolErrors.Load(), a.RPC().Peers(),
				fs.NotifySent.Load(), fs.Dials.Load(), fs.DialErrors.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
