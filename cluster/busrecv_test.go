package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// script drives a receiver step by step and renders what it does, so each
// test reads as the exchange it checks.
type script struct {
	r   *receiver
	now time.Time
	log []string
}

func newScript() *script {
	return &script{r: newReceiver(time.Second, 0), now: time.Unix(1000, 0)}
}

func (s *script) msg(from string, inc, seq uint64) {
	s.record(s.r.receive(s.now, from, envelope{Inc: inc, Topic: "t", Seq: seq, Payload: []byte(fmt.Sprint(seq))}, nil))
}

func (s *script) exchange(from string, inc, seq uint64) {
	acts, _ := s.r.exchange(s.now, from, inc, map[string]uint64{"t": seq})
	s.record(acts)
}

func (s *script) advance(d time.Duration) {
	s.now = s.now.Add(d)
	s.record(s.r.tick(s.now))
}

func (s *script) record(acts []action) {
	for _, a := range acts {
		switch {
		case a.msg != nil:
			s.log = append(s.log, fmt.Sprintf("deliver %s#%d", a.msg.From, a.msg.Seq))
		case a.missed != nil:
			s.log = append(s.log, fmt.Sprintf("missed %s %s", a.missed.From, a.missed.Reason))
		}
	}
}

func (s *script) expect(t *testing.T, want ...string) {
	t.Helper()
	if got := strings.Join(s.log, "; "); got != strings.Join(want, "; ") {
		t.Fatalf("got:  %s\nwant: %s", got, strings.Join(want, "; "))
	}
	s.log = nil
}

func TestReceiverInOrderAndDuplicates(t *testing.T) {
	s := newScript()
	s.msg("a", 1, 1)
	s.msg("a", 1, 2)
	s.msg("a", 1, 2)
	s.msg("a", 1, 1)
	s.msg("a", 1, 3)
	s.expect(t, "deliver a#1", "deliver a#2", "deliver a#3")
	if s.r.dropped != 2 {
		t.Fatalf("dropped = %d, want 2", s.r.dropped)
	}
}

func TestReceiverReorderedIsHeldAndDeliveredInOrder(t *testing.T) {
	s := newScript()
	s.msg("a", 1, 1)
	s.msg("a", 1, 3)
	s.msg("a", 1, 4)
	s.msg("a", 1, 3) // duplicate of a held message
	s.expect(t, "deliver a#1")
	s.advance(500 * time.Millisecond)
	s.msg("a", 1, 2)
	s.expect(t, "deliver a#2", "deliver a#3", "deliver a#4")
	s.advance(2 * time.Second) // the gap was filled: nothing to report
	s.expect(t)
}

func TestReceiverGapReportedAfterTimeout(t *testing.T) {
	s := newScript()
	s.msg("a", 1, 1)
	s.msg("a", 1, 3)
	s.advance(999 * time.Millisecond)
	s.expect(t, "deliver a#1")
	s.advance(time.Millisecond)
	s.expect(t, "missed a gap", "deliver a#3")
	s.msg("a", 1, 2) // too late: already reported
	s.msg("a", 1, 4)
	s.expect(t, "deliver a#4")
}

func TestReceiverExchangeFindsLostLastMessage(t *testing.T) {
	s := newScript()
	s.msg("a", 1, 1)
	s.exchange("a", 1, 1) // nothing lost
	s.advance(2 * time.Second)
	s.expect(t, "deliver a#1")
	s.exchange("a", 1, 2) // a sent #2; we never saw it
	s.advance(time.Second)
	s.expect(t, "missed a gap")
	s.msg("a", 1, 3)
	s.expect(t, "deliver a#3")
}

func TestReceiverExchangeRacingTheMessageIsNotAMiss(t *testing.T) {
	s := newScript()
	s.msg("a", 1, 1)
	s.exchange("a", 1, 2) // the exchange overtook message #2
	s.advance(100 * time.Millisecond)
	s.msg("a", 1, 2)
	s.advance(5 * time.Second)
	s.expect(t, "deliver a#1", "deliver a#2")
}

func TestReceiverSenderRestart(t *testing.T) {
	s := newScript()
	s.msg("a", 1, 1)
	s.msg("a", 1, 2)
	s.msg("a", 2, 1) // new incarnation
	s.msg("a", 1, 3) // late message of the old run
	s.msg("a", 2, 2)
	s.expect(t, "deliver a#1", "deliver a#2", "missed a restart", "deliver a#1", "deliver a#2")
	s.exchange("a", 3, 4) // restarted again and already sent 4
	s.msg("a", 3, 5)
	s.expect(t, "missed a restart", "deliver a#5")
}

func TestReceiverFirstContact(t *testing.T) {
	s := newScript()
	s.msg("a", 1, 1) // from the start: nothing missed
	s.msg("b", 1, 7) // b had sent 6 before we listened
	s.exchange("c", 1, 3)
	s.exchange("d", 1, 0)
	s.msg("c", 1, 4)
	s.msg("e", 1, 2) // overtook e#1, which is still in flight
	s.msg("e", 1, 1)
	s.expect(t, "deliver a#1", "deliver e#1", "deliver e#2")
	s.advance(5 * time.Second)
	s.expect(t, "missed b first-contact", "deliver b#7", "missed c first-contact", "deliver c#4")
}

func TestReceiverRejoined(t *testing.T) {
	s := newScript()
	s.record(s.r.rejoined("a"))
	s.expect(t, "missed a rejoined")
}

func TestReceiverTooManyHeld(t *testing.T) {
	s := newScript()
	s.r.lim.held = 3
	s.msg("a", 1, 1)
	for seq := uint64(3); seq <= 6; seq++ {
		s.msg("a", 1, seq)
	}
	s.expect(t, "deliver a#1", "missed a gap", "deliver a#3", "deliver a#4", "deliver a#5", "deliver a#6")
}

func TestReceiverAcks(t *testing.T) {
	r := newReceiver(time.Second, 0)
	now := time.Unix(0, 0)
	acked := map[uint64]int{}
	var acts []action
	recv := func(seq uint64) []action {
		return r.receive(now, "a", envelope{Inc: 1, Topic: "t", Seq: seq}, func() { acked[seq]++ })
	}
	acts = append(acts, recv(1)...)
	if len(recv(3)) != 0 || len(recv(3)) != 0 { // held, then a held duplicate
		t.Fatal("a held message was acted on")
	}
	acts = append(acts, recv(2)...)
	acts = append(acts, recv(2)...) // a delivered duplicate: acked at once
	for _, a := range acts {
		for _, f := range a.acks {
			f()
		}
	}
	if acked[1] != 1 || acked[2] != 2 || acked[3] != 2 {
		t.Fatalf("acks = %v, want every copy acked once delivered", acked)
	}
}

// A sender's topics and topic names are bounded: admit refuses a topic
// name past the length and a new topic past the count, while the
// sender's known topics go on; an exchange skips the topics it refuses.
func TestReceiverTopicLimits(t *testing.T) {
	r := newReceiver(time.Second, 0)
	r.lim.topics, r.lim.topicLen = 3, 8
	now := time.Unix(0, 0)
	for i := range 3 {
		topic := fmt.Sprint("t", i)
		if why := r.admit("a", topic); why != "" {
			t.Fatalf("topic %d refused: %s", i, why)
		}
		r.receive(now, "a", envelope{Inc: 1, Topic: topic, Seq: 1}, nil)
	}
	if why := r.admit("a", "t3"); !strings.Contains(why, "3 this node keeps") {
		t.Fatalf("a fourth topic: %q", why)
	}
	if why := r.admit("a", "t1"); why != "" {
		t.Fatalf("a known topic refused: %s", why)
	}
	if why := r.admit("b", "t9"); why != "" { // another sender has its own
		t.Fatalf("another sender's first topic refused: %s", why)
	}
	if why := r.admit("b", "ninebytes"); !strings.Contains(why, "9 bytes") {
		t.Fatalf("a long topic name: %q", why)
	}
	_, refused := r.exchange(now, "a", 1, map[string]uint64{"t0": 1, "t5": 4, "t6": 2})
	if refused != 2 || len(r.senders["a"].streams) != 3 {
		t.Fatalf("exchange refused %d topics, a has %d streams; want 2 and 3", refused, len(r.senders["a"].streams))
	}
}

// What a sender holds behind gaps is bounded across its topics, in
// messages and in bytes: past either, every gap of the sender is
// reported and skipped, and the held messages delivered.
func TestReceiverHeldBoundedPerSender(t *testing.T) {
	s := newScript()
	s.r.lim.held, s.r.lim.heldBytes = 4, 1<<20
	for i, topic := range []string{"x", "y", "z"} {
		s.record(s.r.receive(s.now, "a", envelope{Inc: 1, Topic: topic, Seq: 3}, nil))
		if i < 2 {
			s.record(s.r.receive(s.now, "a", envelope{Inc: 1, Topic: topic, Seq: 4}, nil))
		}
	}
	s.expect(t, "missed a gap", "deliver a#3", "deliver a#4", "missed a gap", "deliver a#3", "deliver a#4", "missed a gap", "deliver a#3")
	if snd := s.r.senders["a"]; snd.held != 0 || snd.heldBytes != 0 {
		t.Fatalf("held after the flush: %d messages, %d bytes", snd.held, snd.heldBytes)
	}
	s.r.lim.held = 100
	big := make([]byte, 400<<10)
	for seq := uint64(10); seq < 13; seq++ {
		s.record(s.r.receive(s.now, "a", envelope{Inc: 1, Topic: "x", Seq: seq, Payload: big}, nil))
	}
	s.expect(t, "missed a gap", "deliver a#10", "deliver a#11", "deliver a#12")
	if snd := s.r.senders["a"]; snd.heldBytes != 0 {
		t.Fatalf("%d bytes held after the flush", snd.heldBytes)
	}
}

// A departed member's held messages are delivered behind a report (their
// acks run), and only the most recent departed senders keep streams.
func TestReceiverDeparted(t *testing.T) {
	s := newScript()
	s.r.lim.departed = 2
	s.record(s.r.receive(s.now, "a", envelope{Inc: 1, Topic: "t", Seq: 2}, nil))
	acts := s.r.departed(s.now, "a")
	s.record(acts)
	s.expect(t, "missed a gap", "deliver a#2")
	for _, f := range []string{"b", "c", "d"} {
		s.msg(f, 1, 1)
		s.now = s.now.Add(time.Second)
		s.record(s.r.departed(s.now, f))
	}
	s.expect(t, "deliver b#1", "deliver c#1", "deliver d#1")
	if _, ok := s.r.senders["a"]; ok {
		t.Fatal("the oldest departed sender is still kept")
	}
	if _, ok := s.r.senders["b"]; ok {
		t.Fatal("the second oldest departed sender is still kept")
	}
	if len(s.r.senders) != 2 {
		t.Fatalf("%d senders kept, want 2", len(s.r.senders))
	}
	s.record(s.r.rejoined("d")) // back: no longer counted as departed
	s.msg("d", 1, 2)
	s.expect(t, "missed d rejoined", "deliver d#2")
}

// A tick with a gap among many streams still reports it, in order: the
// check that skips the usual tick (no gap due) must not skip this one.
func TestReceiverTickAmongManyStreams(t *testing.T) {
	s := newScript()
	for i := range 31 {
		s.msg(fmt.Sprintf("n%02d", i), 1, 1)
	}
	s.log = nil
	s.msg("n07", 1, 3) // a gap before #3
	s.advance(500 * time.Millisecond)
	s.expect(t)
	s.advance(600 * time.Millisecond)
	s.expect(t, "missed n07 gap", "deliver n07#3")
}

// BenchmarkReceiverIdleTick is one bus tick of a node of a 32-node
// cluster with nothing missing: 31 senders, 4 topics each. Every node
// ticks four times per gap timeout (8 a second on the loopback preset).
func BenchmarkReceiverIdleTick(b *testing.B) {
	r := newReceiver(500*time.Millisecond, 0)
	now := time.Unix(1000, 0)
	for i := range 31 {
		for _, topic := range []string{"l2", "sched", "pack", "kv"} {
			r.receive(now, fmt.Sprintf("n%d", i), envelope{Inc: 1, Topic: topic, Seq: 1}, nil)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(125 * time.Millisecond)
		if acts := r.tick(now); len(acts) != 0 {
			b.Fatal("an idle tick acted")
		}
	}
}

// A gap that an exchange opened on a stream no message has reached yet
// waits firstWait longer: the sender's first messages may be waiting for
// its connection to this node. Once a message arrives the usual gap
// timeout applies, from when the gap opened.
func TestReceiverFirstContactByExchangeWaitsForTheDial(t *testing.T) {
	s := newScript()
	s.r.firstWait = 2 * time.Second
	s.exchange("a", 1, 2) // a has sent #1 and #2; neither has arrived
	s.exchange("b", 1, 1)
	s.advance(1500 * time.Millisecond)
	s.expect(t) // past the gap timeout, within it plus firstWait
	s.msg("a", 1, 1)
	s.msg("a", 1, 2)
	s.expect(t, "deliver a#1", "deliver a#2")
	s.advance(1600 * time.Millisecond) // 3.1 s: b's never arrived
	s.expect(t, "missed b first-contact")

	s.exchange("c", 1, 3)
	s.msg("c", 1, 2) // heard: #1 was before it on the same connection
	s.advance(1100 * time.Millisecond)
	s.expect(t, "missed c first-contact", "deliver c#2")
}
