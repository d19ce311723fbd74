package cluster

import (
	"fmt"
	"slices"
	"time"
)

// receiver is the bus's receiving state machine: a plain function of the
// messages, exchanges and clock readings fed to it, with no goroutines or
// I/O, so that its rules can be tested step by step.
//
// For each (sender, topic) it keeps a stream: the sender's incarnation, the
// next sequence number it expects, the highest number known to exist, and
// messages that arrived ahead of a gap. The rules:
//
//   - seq == next: deliver, then deliver any held messages that follow.
//   - seq < next: a duplicate; drop it.
//   - seq > next: hold it; a gap has opened.
//   - A gap not filled within the gap timeout is reported as missed; the
//     held messages are then delivered and the stream moves past the gap.
//   - A message or exchange from a newer incarnation of the sender means
//     it restarted: report missed and start the stream afresh. Messages
//     from an older incarnation are dropped.
//   - The first contact with a sender starts a stream expecting message 1:
//     a higher number opens a gap like any other, reported (as first
//     contact) if the earlier messages do not arrive in time; they were
//     sent before this node listened.
//   - An exchange (the sender's latest numbers, via memberlist push/pull)
//     that shows a higher number than we have seen opens a gap too, which
//     is how a lost last message is found.
//
// Delivery is therefore exactly once per message and in order per stream,
// and every message that is not delivered is covered by a missed report.
type receiver struct {
	gap     time.Duration
	maxHeld int
	streams map[streamKey]*stream
	dropped uint64 // duplicates and messages of old incarnations
}

type streamKey struct{ from, topic string }

type stream struct {
	inc       uint64
	next      uint64
	known     uint64 // highest sequence number known to exist
	held      map[uint64]*inbound
	holeSince time.Time // zero when there is no gap
}

// inbound is a message with the acks of its synchronous copies.
type inbound struct {
	msg  Message
	acks []func()
}

// action is what the receiver asks the bus to do, in order: deliver a
// message (then run its acks), report a miss, or just ack.
type action struct {
	msg    *Message
	missed *Missed
	acks   []func()
}

func newReceiver(gap time.Duration) *receiver {
	return &receiver{gap: gap, maxHeld: 4096, streams: map[streamKey]*stream{}}
}

// receive processes one message. ack, if not nil, is run once the message
// has been delivered, or at once if it never will be (a duplicate).
func (r *receiver) receive(now time.Time, from string, env envelope, ack func()) []action {
	var out []action
	k := streamKey{from, env.Topic}
	s := r.streams[k]
	switch {
	case s == nil:
		// If this is not message 1, earlier ones may still be in flight:
		// hold it like any message behind a gap.
		s = &stream{inc: env.Inc, next: 1}
		r.streams[k] = s
	case env.Inc > s.inc:
		out = append(out, r.restart(s, from, env.Topic, env.Inc)...)
		if env.Seq > 1 {
			s.next = env.Seq // the restart report covers 1..Seq-1
		}
	case env.Inc < s.inc:
		r.dropped++
		return ackOnly(ack) // from a previous run of the sender
	}
	msg := Message{From: from, Topic: env.Topic, Seq: env.Seq, Payload: env.Payload}
	switch {
	case env.Seq < s.next:
		r.dropped++
		return append(out, ackOnly(ack)...)
	case env.Seq == s.next:
		out = append(out, deliverAction(&inbound{msg: msg, acks: acksOf(ack)}))
		s.next++
		out = append(out, s.drain()...)
	default:
		if h := s.held[env.Seq]; h != nil {
			r.dropped++
			if ack != nil {
				h.acks = append(h.acks, ack)
			}
			return out
		}
		if s.held == nil {
			s.held = map[uint64]*inbound{}
		}
		s.held[env.Seq] = &inbound{msg: msg, acks: acksOf(ack)}
		if len(s.held) > r.maxHeld {
			return append(out, s.skipGap(from, env.Topic, MissedGap, "too many messages held behind a gap")...)
		}
	}
	s.known = max(s.known, env.Seq)
	s.updateHole(now)
	return out
}

// exchange processes a sender's latest sequence numbers per topic.
func (r *receiver) exchange(now time.Time, from string, inc uint64, seqs map[string]uint64) []action {
	var out []action
	for _, topic := range sortedKeys(seqs) {
		seq := seqs[topic]
		k := streamKey{from, topic}
		s := r.streams[k]
		switch {
		case s == nil:
			s = &stream{inc: inc, next: 1}
			r.streams[k] = s
		case inc > s.inc:
			out = append(out, r.restart(s, from, topic, inc)...)
			s.next = seq + 1
		case inc < s.inc:
			continue
		}
		s.known = max(s.known, seq)
		s.updateHole(now)
	}
	return out
}

// tick reports and skips every gap older than the gap timeout.
func (r *receiver) tick(now time.Time) []action {
	var out []action
	for _, k := range r.sortedStreams() {
		s := r.streams[k]
		if !s.holeSince.IsZero() && now.Sub(s.holeSince) >= r.gap {
			reason, detail := MissedGap, fmt.Sprintf("messages from %d on were not received within %v", s.next, r.gap)
			if s.next == 1 {
				reason, detail = MissedFirstContact, fmt.Sprintf("%s had sent messages before this node heard from it", k.from)
			}
			out = append(out, s.skipGap(k.from, k.topic, reason, detail)...)
		}
	}
	return out
}

// rejoined reports that messages from a member that failed or left and
// came back may have been lost, on every topic.
func (r *receiver) rejoined(from string) []action {
	return []action{missedAction(from, "", MissedRejoined, from+" failed or left and came back")}
}

func (r *receiver) restart(s *stream, from, topic string, inc uint64) []action {
	out := []action{missedAction(from, topic, MissedRestart, from+" restarted")}
	// Held messages of the old run are still real messages: deliver them.
	for _, seq := range sortedKeys(s.held) {
		out = append(out, deliverAction(s.held[seq]))
	}
	*s = stream{inc: inc, next: 1}
	return out
}

func (s *stream) drain() []action {
	var out []action
	for h := s.held[s.next]; h != nil; h = s.held[s.next] {
		delete(s.held, s.next)
		out = append(out, deliverAction(h))
		s.next++
	}
	return out
}

// skipGap reports the gap as missed and delivers what was held behind it.
func (s *stream) skipGap(from, topic string, reason MissedReason, detail string) []action {
	out := []action{missedAction(from, topic, reason, detail)}
	for _, seq := range sortedKeys(s.held) {
		out = append(out, deliverAction(s.held[seq]))
		s.next = seq + 1
	}
	s.held = nil
	s.next = max(s.next, s.known+1)
	s.holeSince = time.Time{}
	return out
}

func (s *stream) updateHole(now time.Time) {
	switch {
	case s.next > s.known:
		s.holeSince = time.Time{}
	case s.holeSince.IsZero():
		s.holeSince = now
	}
}

func (r *receiver) sortedStreams() []streamKey {
	keys := make([]streamKey, 0, len(r.streams))
	for k := range r.streams {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b streamKey) int {
		if c := cmpString(a.from, b.from); c != 0 {
			return c
		}
		return cmpString(a.topic, b.topic)
	})
	return keys
}

func sortedKeys[K string | uint64, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func missedAction(from, topic string, reason MissedReason, detail string) action {
	return action{missed: &Missed{From: from, Topic: topic, Reason: reason, Detail: detail}}
}

func deliverAction(h *inbound) action {
	m := h.msg
	return action{msg: &m, acks: h.acks}
}

func ackOnly(ack func()) []action {
	if ack == nil {
		return nil
	}
	return []action{{acks: []func(){ack}}}
}

func acksOf(ack func()) []func() {
	if ack == nil {
		return nil
	}
	return []func(){ack}
}
