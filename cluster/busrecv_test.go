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
	return &script{r: newReceiver(time.Second), now: time.Unix(1000, 0)}
}

func (s *script) msg(from string, inc, seq uint64) {
	s.record(s.r.receive(s.now, from, envelope{Inc: inc, Topic: "t", Seq: seq, Payload: []byte(fmt.Sprint(seq))}, nil))
}

func (s *script) exchange(from string, inc, seq uint64) {
	s.record(s.r.exchange(s.now, from, inc, map[string]uint64{"t": seq}))
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
	s.r.maxHeld = 3
	s.msg("a", 1, 1)
	for seq := uint64(3); seq <= 6; seq++ {
		s.msg("a", 1, seq)
	}
	s.expect(t, "deliver a#1", "missed a gap", "deliver a#3", "deliver a#4", "deliver a#5", "deliver a#6")
}

func TestReceiverAcks(t *testing.T) {
	r := newReceiver(time.Second)
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
