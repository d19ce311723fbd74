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
//
// What a sender can make the receiver hold is bounded (busLimits): its
// topics (admit refuses a new one past the limit, and a topic name past
// its length), and the messages and bytes held behind its gaps, across
// its topics (past either, every gap of the sender is reported and
// skipped at once). The bus feeds it only messages from current members;
// when a member departs its held messages are delivered behind a report,
// and its streams are kept (for a quick return) only for the most recent
// departed senders.
type receiver struct {
	gap time.Duration
	// firstWait is how much longer than gap a gap waits on a stream that
	// an exchange opened and no message has reached yet: the exchange can
	// overtake the sender's first messages, which wait for its peer RPC
	// connection to this node to be dialled (up to the dial timeout). 32
	// nodes under load reported such first messages missed ("first
	// contact") while they were on their way, in 2 runs of 20 of
	// TestScaleConvergesAndHolds, right after the exchange that follows a
	// join (Node.catchUp).
	firstWait time.Duration
	lim       busLimits
	senders   map[string]*sender
	dropped   uint64 // duplicates and messages of old incarnations
	// opened: a gap opened since the bus last looked (its tick loop
	// sleeps while there is none).
	opened bool
}

// busLimits bound the receiver's state per sender.
type busLimits struct {
	topics    int // streams (topics) per sender
	topicLen  int // bytes of a topic name
	held      int // messages held behind gaps, across the sender's topics
	heldBytes int // their payload and topic bytes
	departed  int // departed senders whose streams are kept
}

// defaultBusLimits are far above what shoal sends (a handful of topics:
// the L2 cache's regions, the scheduler, the pack cache).
var defaultBusLimits = busLimits{topics: 256, topicLen: 256, held: 4096, heldBytes: 32 << 20, departed: 64}

// sender is the receiver's state for one sender.
type sender struct {
	streams   map[string]*stream // by topic
	held      int
	heldBytes int
	departed  time.Time // when it departed; zero while it is a member
}

type stream struct {
	inc       uint64
	next      uint64
	known     uint64 // highest sequence number known to exist
	held      map[uint64]*inbound
	holeSince time.Time // zero when there is no gap
	heard     bool      // a message of the stream has arrived
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

func newReceiver(gap, firstWait time.Duration) *receiver {
	return &receiver{gap: gap, firstWait: firstWait, lim: defaultBusLimits, senders: map[string]*sender{}}
}

func (r *receiver) sender(from string) *sender {
	snd := r.senders[from]
	if snd == nil {
		snd = &sender{streams: map[string]*stream{}}
		r.senders[from] = snd
	}
	return snd
}

// admit says why a message (or an exchange's number) on topic from a
// sender must be refused, "" if it may be received: a topic name past the
// limit, or a new topic past the sender's limit.
func (r *receiver) admit(from, topic string) string {
	if len(topic) > r.lim.topicLen {
		return fmt.Sprintf("a topic name of %d bytes (at most %d)", len(topic), r.lim.topicLen)
	}
	if snd := r.senders[from]; snd != nil && snd.streams[topic] == nil && len(snd.streams) >= r.lim.topics {
		return fmt.Sprintf("a topic past the %d this node keeps per sender", r.lim.topics)
	}
	return ""
}

// receive processes one message, which admit accepted. ack, if not nil,
// is run once the message has been delivered, or at once if it never will
// be (a duplicate).
func (r *receiver) receive(now time.Time, from string, env envelope, ack func()) []action {
	var out []action
	snd := r.sender(from)
	s := snd.streams[env.Topic]
	switch {
	case s == nil:
		// If this is not message 1, earlier ones may still be in flight:
		// hold it like any message behind a gap.
		s = &stream{inc: env.Inc, next: 1}
		snd.streams[env.Topic] = s
	case env.Inc > s.inc:
		out = append(out, r.restart(snd, s, from, env.Topic, env.Inc)...)
		if env.Seq > 1 {
			s.next = env.Seq // the restart report covers 1..Seq-1
		}
	case env.Inc < s.inc:
		r.dropped++
		return ackOnly(ack) // from a previous run of the sender
	}
	s.heard = true
	msg := Message{From: from, Topic: env.Topic, Seq: env.Seq, Payload: env.Payload}
	switch {
	case env.Seq < s.next:
		r.dropped++
		return append(out, ackOnly(ack)...)
	case env.Seq == s.next:
		out = append(out, deliverAction(&inbound{msg: msg, acks: acksOf(ack)}))
		s.next++
		out = append(out, snd.drain(s)...)
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
		snd.held++
		snd.heldBytes += heldSize(env)
		if snd.held > r.lim.held || snd.heldBytes > r.lim.heldBytes {
			s.known = max(s.known, env.Seq)
			detail := fmt.Sprintf("more than %d messages or %d bytes held behind gaps", r.lim.held, r.lim.heldBytes)
			for _, topic := range sortedKeys(snd.streams) {
				if t := snd.streams[topic]; len(t.held) > 0 {
					out = append(out, snd.skipGap(t, from, topic, MissedGap, detail)...)
				}
			}
			return out
		}
	}
	s.known = max(s.known, env.Seq)
	r.opened = s.updateHole(now) || r.opened
	return out
}

// heldSize is what a held message counts against its sender's bytes.
func heldSize(env envelope) int { return len(env.Payload) + len(env.Topic) }

// exchange processes a sender's latest sequence numbers per topic. Topics
// that admit refuses are skipped; their number is returned.
func (r *receiver) exchange(now time.Time, from string, inc uint64, seqs map[string]uint64) (out []action, refused int) {
	snd := r.sender(from)
	for _, topic := range sortedKeys(seqs) {
		if r.admit(from, topic) != "" {
			refused++
			continue
		}
		seq := seqs[topic]
		s := snd.streams[topic]
		switch {
		case s == nil:
			s = &stream{inc: inc, next: 1}
			snd.streams[topic] = s
		case inc > s.inc:
			out = append(out, r.restart(snd, s, from, topic, inc)...)
			s.next = seq + 1
		case inc < s.inc:
			continue
		}
		s.known = max(s.known, seq)
		r.opened = s.updateHole(now) || r.opened
	}
	return out, refused
}

// tick reports and skips every gap older than the gap timeout.
func (r *receiver) tick(now time.Time) []action {
	if !r.holeDue(now) {
		return nil // the usual tick: nothing sorted, nothing allocated
	}
	var out []action
	for _, from := range sortedKeys(r.senders) {
		snd := r.senders[from]
		for _, topic := range sortedKeys(snd.streams) {
			s := snd.streams[topic]
			if r.due(s, now) {
				reason, detail := MissedGap, fmt.Sprintf("messages from %d on were not received within %v", s.next, r.gap)
				if s.next == 1 {
					reason, detail = MissedFirstContact, fmt.Sprintf("%s had sent messages before this node heard from it", from)
				}
				out = append(out, snd.skipGap(s, from, topic, reason, detail)...)
			}
		}
	}
	return out
}

// due reports whether the stream has had a gap for its gap timeout: gap,
// plus firstWait while no message of the stream has arrived.
func (r *receiver) due(s *stream, now time.Time) bool {
	if s.holeSince.IsZero() {
		return false
	}
	wait := r.gap
	if !s.heard {
		wait += r.firstWait
	}
	return now.Sub(s.holeSince) >= wait
}

// holeDue reports whether some stream has had a gap for its gap timeout.
// The bus ticks four times per gap timeout while some stream has a gap,
// with a stream per sender and topic: until one is due, a tick walks them
// without sorting or allocating.
func (r *receiver) holeDue(now time.Time) bool {
	for _, snd := range r.senders {
		for _, s := range snd.streams {
			if r.due(s, now) {
				return true
			}
		}
	}
	return false
}

// rejoined reports that messages from a member that failed or left and
// came back may have been lost, on every topic.
func (r *receiver) rejoined(from string) []action {
	if snd := r.senders[from]; snd != nil {
		snd.departed = time.Time{}
	}
	return []action{missedAction(from, "", MissedRejoined, from+" failed or left and came back")}
}

// departed is told that a member failed or left. What it held behind
// gaps is delivered behind a missed report (freeing it, and running the
// acks of synchronous copies); its streams are kept, for a quick return,
// while it is among the lim.departed most recent departed senders.
func (r *receiver) departed(now time.Time, from string) []action {
	snd := r.senders[from]
	if snd == nil {
		return nil
	}
	var out []action
	for _, topic := range sortedKeys(snd.streams) {
		if s := snd.streams[topic]; len(s.held) > 0 {
			out = append(out, snd.skipGap(s, from, topic, MissedGap, from+" departed with messages missing")...)
		}
	}
	snd.departed = now
	var gone []string
	for name, s := range r.senders {
		if !s.departed.IsZero() {
			gone = append(gone, name)
		}
	}
	if len(gone) > r.lim.departed {
		slices.SortFunc(gone, func(a, b string) int { return r.senders[a].departed.Compare(r.senders[b].departed) })
		for _, name := range gone[:len(gone)-r.lim.departed] {
			delete(r.senders, name)
		}
	}
	return out
}

func (r *receiver) restart(snd *sender, s *stream, from, topic string, inc uint64) []action {
	out := []action{missedAction(from, topic, MissedRestart, from+" restarted")}
	// Held messages of the old run are still real messages: deliver them.
	for _, seq := range sortedKeys(s.held) {
		out = append(out, snd.release(s, seq))
	}
	*s = stream{inc: inc, next: 1}
	return out
}

// release takes a held message out of s (and its sender's count) and
// returns its delivery.
func (snd *sender) release(s *stream, seq uint64) action {
	h := s.held[seq]
	delete(s.held, seq)
	snd.held--
	snd.heldBytes -= len(h.msg.Payload) + len(h.msg.Topic)
	return deliverAction(h)
}

func (snd *sender) drain(s *stream) []action {
	var out []action
	for s.held[s.next] != nil {
		out = append(out, snd.release(s, s.next))
		s.next++
	}
	return out
}

// skipGap reports the gap as missed and delivers what was held behind it.
func (snd *sender) skipGap(s *stream, from, topic string, reason MissedReason, detail string) []action {
	out := []action{missedAction(from, topic, reason, detail)}
	for _, seq := range sortedKeys(s.held) {
		out = append(out, snd.release(s, seq))
		s.next = seq + 1
	}
	s.held = nil
	s.next = max(s.next, s.known+1)
	s.holeSince = time.Time{}
	return out
}

// updateHole notes when the stream's gap opened; it reports whether one
// opened now.
func (s *stream) updateHole(now time.Time) bool {
	switch {
	case s.next > s.known:
		s.holeSince = time.Time{}
	case s.holeSince.IsZero():
		s.holeSince = now
		return true
	}
	return false
}

// gaps reports whether any stream has a gap.
func (r *receiver) gaps() bool {
	for _, snd := range r.senders {
		for _, s := range snd.streams {
			if !s.holeSince.IsZero() {
				return true
			}
		}
	}
	return false
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
