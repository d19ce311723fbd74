package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster/rpc"
)

// RPC message types of the bus.
const (
	rpcBusOneway = "bus"
	rpcBusSync   = "bus.sync"
)

// Message is a bus message as delivered to a subscriber.
type Message struct {
	From    string
	Topic   string
	Seq     uint64
	Payload []byte
}

// MissedReason says why a subscriber may have missed messages.
type MissedReason string

const (
	// MissedGap: a numbered message did not arrive within the gap timeout
	// (or the sender's latest number, learnt by exchange, was never seen).
	MissedGap MissedReason = "gap"
	// MissedRestart: the sender restarted (a new incarnation).
	MissedRestart MissedReason = "restart"
	// MissedRejoined: the sender failed or left and came back.
	MissedRejoined MissedReason = "rejoined"
	// MissedFirstContact: the sender had sent messages before this node
	// heard from it.
	MissedFirstContact MissedReason = "first-contact"
)

// Missed tells a subscriber it may have missed messages from From on
// Topic. A subscriber that caches state derived from the messages should
// drop what it cannot vouch for.
type Missed struct {
	From   string
	Topic  string
	Reason MissedReason
	Detail string
}

// Subscriber receives a topic's messages. Its methods are called from one
// goroutine, in order, and should return quickly: they delay every later
// delivery, and a synchronous publisher waits for them.
type Subscriber interface {
	Deliver(Message)
	Missed(Missed)
}

// SubscriberFuncs adapts two functions to a Subscriber; a nil one ignores
// its calls.
type SubscriberFuncs struct {
	OnMessage func(Message)
	OnMissed  func(Missed)
}

func (s SubscriberFuncs) Deliver(m Message) {
	if s.OnMessage != nil {
		s.OnMessage(m)
	}
}

func (s SubscriberFuncs) Missed(m Missed) {
	if s.OnMissed != nil {
		s.OnMissed(m)
	}
}

// BusStats counts the bus's traffic.
type BusStats struct {
	Published, PublishedSync, SendErrors atomic.Uint64
	Received, Delivered, Duplicates      atomic.Uint64
	MissedReports                        atomic.Uint64
	// Refused counts messages and exchanges refused: from a node that is
	// not a current member, of an incarnation ahead of the member's, or
	// over a limit per sender (Node.Refusals has them by reason).
	Refused atomic.Uint64
}

// envelope is a bus message on the wire.
type envelope struct {
	Inc     uint64 `msgpack:"i"`
	Topic   string `msgpack:"t"`
	Seq     uint64 `msgpack:"s"`
	Payload []byte `msgpack:"p"`
}

// exchangeState is what a node tells others at memberlist push/pull: its
// incarnation and the latest number it gave each topic.
type exchangeState struct {
	Name string            `msgpack:"n"`
	Inc  uint64            `msgpack:"i"`
	Seqs map[string]uint64 `msgpack:"s"`
}

// Bus fans messages out to every other member over the peer RPC, numbering
// each sender's messages per topic so that receivers deliver each message
// once, in order, and report what they may have missed (see receiver).
type Bus struct {
	cfg   busConfig
	stats BusStats

	pubMu sync.Mutex // orders numbering, queueing and sending
	seqs  map[string]uint64
	// out holds the messages numbered by Publish and not yet handed to
	// the peer RPC, in batches of at most maxBusBatch bytes; queued and
	// sent count the messages that went into it and out of it.
	out          []outBatch
	queued, sent uint64
	// sending: a goroutine (a publisher, or sendLoop) is handing batches
	// to the peer RPC; the others only queue.
	sending  bool
	sentCond *sync.Cond // on pubMu: sent advanced, or the bus closed
	kick     chan struct{}

	mu    sync.Mutex
	recv  *receiver
	subs  map[string][]*busSub
	queue []action

	wake chan struct{}
	// gapped wakes tickLoop when a gap opens (it sleeps while there is
	// none).
	gapped chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type busConfig struct {
	self        string
	incarnation uint64
	rpc         *rpc.Node
	members     func() []string
	// member reports whether name is a current (alive) member, and the
	// incarnation its gossiped metadata carries.
	member func(name string) (inc uint64, ok bool)
	// refuse counts and logs a refused message or exchange
	// (ListenerBus).
	refuse func(reason, from, detail string)
	now    func() time.Time
	gap    time.Duration
	// firstWait: see receiver.firstWait (the peer RPC's dial timeout).
	firstWait time.Duration
	log       *slog.Logger
}

type busSub struct{ s Subscriber }

// outBatch is messages encoded by appendBusMsg, the body of one frame
// without its header.
type outBatch struct {
	buf []byte
	n   int
}

func newBus(cfg busConfig) *Bus {
	b := &Bus{
		cfg: cfg, seqs: map[string]uint64{}, recv: newReceiver(cfg.gap, cfg.firstWait),
		subs: map[string][]*busSub{}, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		kick: make(chan struct{}, 1), gapped: make(chan struct{}, 1),
	}
	b.sentCond = sync.NewCond(&b.pubMu)
	cfg.rpc.HandleOneway(rpcBusOneway, b.onOneway)
	cfg.rpc.Handle(rpcBusSync, b.onSync)
	b.wg.Add(3)
	go b.deliverLoop()
	go b.tickLoop()
	go b.sendLoop()
	return b
}

// Stats returns the bus's counters.
func (b *Bus) Stats() *BusStats { return &b.stats }

// Subscribe registers s for a topic's messages and misses. The returned
// function unsubscribes; it is safe to call twice.
func (b *Bus) Subscribe(topic string, s Subscriber) (cancel func()) {
	sub := &busSub{s: s}
	b.mu.Lock()
	b.subs[topic] = append(b.subs[topic], sub)
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.subs[topic] = slices.DeleteFunc(b.subs[topic], func(x *busSub) bool { return x == sub })
	}
}

// Publish numbers a message and queues it for every other alive member
// without waiting. Delivery is best effort; receivers that lose it are told
// so by a Missed report. The error reports a closed node; members that
// could not be reached are counted in SendErrors.
//
// Messages travel in batches: if no other publish is being handed to the
// peer RPC, this one is sent at once, as a frame of its own to each peer;
// otherwise it waits in a batch with the others published meanwhile, which
// the publisher that is sending (or the bus's sender goroutine) sends next,
// as one frame per peer. An idle bus adds no delay, and a burst of
// publishes costs each peer a few frames rather than one per message.
// payload is copied.
func (b *Bus) Publish(topic string, payload []byte) error {
	b.pubMu.Lock()
	if err := b.queueLocked(topic, payload); err != nil {
		b.pubMu.Unlock()
		return err
	}
	b.stats.Published.Add(1)
	if b.sending {
		b.pubMu.Unlock()
		return nil
	}
	b.sending = true
	batches := b.takeLocked()
	b.pubMu.Unlock()
	err := b.sendBatches(batches)
	b.pubMu.Lock()
	b.sent += uint64(batchLen(batches))
	b.sentCond.Broadcast()
	if len(b.out) > 0 {
		// Published while this one was sent: the sender goroutine takes
		// them, so that this publisher does not send for others for ever.
		select {
		case b.kick <- struct{}{}:
		default:
		}
	} else {
		b.sending = false
	}
	b.pubMu.Unlock()
	return err
}

// queueLocked numbers a message and adds it to the last batch of out, or
// to a new one if it would make that batch exceed maxBusBatch.
func (b *Bus) queueLocked(topic string, payload []byte) error {
	select {
	case <-b.stop:
		return ErrClosed
	default:
	}
	b.seqs[topic]++
	if k := len(b.out); k == 0 || len(b.out[k-1].buf)+len(topic)+len(payload)+16 > maxBusBatch {
		b.out = append(b.out, outBatch{})
	}
	last := &b.out[len(b.out)-1]
	last.buf = appendBusMsg(last.buf, topic, b.seqs[topic], payload)
	last.n++
	b.queued++
	return nil
}

func (b *Bus) takeLocked() []outBatch {
	out := b.out
	b.out = nil
	return out
}

func batchLen(batches []outBatch) int {
	n := 0
	for _, bt := range batches {
		n += bt.n
	}
	return n
}

// sendBatches hands batches to the peer RPC, one frame per batch and
// peer, in order.
func (b *Bus) sendBatches(batches []outBatch) error {
	members := b.cfg.members()
	for _, bt := range batches {
		body := busFrameBody(b.cfg.incarnation, bt.buf, bt.n)
		for _, m := range members {
			if err := b.cfg.rpc.Notify(m, rpcBusOneway, body); err != nil {
				if errors.Is(err, rpc.ErrClosed) {
					return ErrClosed
				}
				b.stats.SendErrors.Add(uint64(bt.n))
				b.cfg.log.Debug("bus: send failed", "to", m, "messages", bt.n, "err", err)
			}
		}
	}
	return nil
}

// sendLoop sends what was published while a publisher was sending, once
// that publisher hands over (Publish).
func (b *Bus) sendLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
		}
		for {
			b.pubMu.Lock()
			batches := b.takeLocked()
			if len(batches) == 0 {
				b.sending = false
				b.pubMu.Unlock()
				break
			}
			b.pubMu.Unlock()
			err := b.sendBatches(batches)
			b.pubMu.Lock()
			b.sent += uint64(batchLen(batches))
			b.sentCond.Broadcast()
			b.pubMu.Unlock()
			if err != nil {
				return // closed
			}
		}
	}
}

// PublishSync numbers a message, sends it to every other alive member and
// waits until each has delivered it to its subscribers, or ctx ends. It
// returns the members that did not acknowledge in time; the message may
// still reach them later.
func (b *Bus) PublishSync(ctx context.Context, topic string, payload []byte) (notAcked []string, err error) {
	_, notAcked, err = b.PublishSyncAcks(ctx, topic, payload)
	return notAcked, err
}

// PublishSyncAcks is PublishSync that also names the members that did
// acknowledge: a caller that must account for every member of some other
// list (a read-lease registry, say) can tell who it never reached. Both
// lists are sorted.
func (b *Bus) PublishSyncAcks(ctx context.Context, topic string, payload []byte) (acked, notAcked []string, err error) {
	b.pubMu.Lock()
	data, err := b.numberLocked(topic, payload)
	if err != nil {
		b.pubMu.Unlock()
		return nil, nil, err
	}
	// The messages published before this one leave first: a receiver
	// would hold this one back until they arrive.
	for before := b.queued; b.sent < before && !b.closing(); {
		b.sentCond.Wait()
	}
	members := b.cfg.members()
	b.pubMu.Unlock()
	b.stats.PublishedSync.Add(1)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.cfg.rpc.Call(ctx, m, rpcBusSync, data)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				b.stats.SendErrors.Add(1)
				b.cfg.log.Debug("bus: synchronous message not acknowledged", "to", m, "err", err)
				notAcked = append(notAcked, m)
				return
			}
			acked = append(acked, m)
		}()
	}
	wg.Wait()
	slices.Sort(acked)
	slices.Sort(notAcked)
	return acked, notAcked, nil
}

func (b *Bus) closing() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

// numberLocked numbers a synchronous message and encodes it as a frame
// of one message (busframe.go: written and read without reflection,
// where msgpack's reflective decoding of an envelope was most of a
// synchronous message's handling).
func (b *Bus) numberLocked(topic string, payload []byte) ([]byte, error) {
	if b.closing() {
		return nil, ErrClosed
	}
	b.seqs[topic]++
	return busFrameBody(b.cfg.incarnation, appendBusMsg(nil, topic, b.seqs[topic], payload), 1), nil
}

func (b *Bus) onOneway(from string, body []byte) {
	envs, err := decodeBusFrame(body)
	if err != nil {
		b.cfg.log.Warn("bus: dropped undecodable frame", "from", from, "err", err)
		return
	}
	b.receiveBatch(from, envs)
}

func (b *Bus) onSync(ctx context.Context, from string, body []byte) ([]byte, error) {
	envs, err := decodeBusFrame(body) // a frame of one, or an older sender's envelope
	if err != nil {
		return nil, fmt.Errorf("undecodable bus message: %w", err)
	}
	if len(envs) != 1 {
		return nil, fmt.Errorf("undecodable bus message: %d messages in a synchronous frame", len(envs))
	}
	env := envs[0]
	delivered := make(chan struct{})
	var once sync.Once
	if err := b.receive(from, env, func() { once.Do(func() { close(delivered) }) }); err != nil {
		return nil, err
	}
	select {
	case <-delivered:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// errRefused answers a refused synchronous message.
var errRefused = errors.New("bus: message refused")

// receive takes a message from a peer, unless it must be refused: its
// sender is not a current member (a forged or stale name), claims an
// incarnation ahead of the one its metadata carries (one that would make
// this node drop the real sender's messages as older), or is over a
// limit of what this node keeps per sender. A message from an earlier
// incarnation of a member is dropped as a duplicate.
func (b *Bus) receive(from string, env envelope, ack func()) error {
	b.stats.Received.Add(1)
	inc, ok := b.cfg.member(from)
	switch {
	case !ok:
		b.refused(ReasonNotMember, from, "a message from a node that is not a current member, on topic "+clip(env.Topic))
		return errRefused
	case env.Inc > inc:
		b.refused(ReasonIncarnation, from, fmt.Sprintf("a message of incarnation %d; the member's is %d", env.Inc, inc))
		return errRefused
	case env.Inc < inc:
		b.stats.Duplicates.Add(1)
		if ack != nil {
			ack()
		}
		return nil
	}
	b.mu.Lock()
	if why := b.recv.admit(from, env.Topic); why != "" {
		b.mu.Unlock()
		b.refused(ReasonLimit, from, why)
		return errRefused
	}
	dups := b.recv.dropped
	b.enqueueLocked(b.recv.receive(b.cfg.now(), from, env, ack))
	if b.recv.dropped != dups {
		b.stats.Duplicates.Add(1)
	}
	b.mu.Unlock()
	return nil
}

// receiveBatch takes the messages of one frame, all of one sender
// incarnation, as receive would take them one by one.
func (b *Bus) receiveBatch(from string, envs []envelope) {
	if len(envs) == 1 {
		b.receive(from, envs[0], nil)
		return
	}
	b.stats.Received.Add(uint64(len(envs)))
	inc, ok := b.cfg.member(from)
	switch env := envs[0]; {
	case !ok:
		b.refusedN(len(envs), ReasonNotMember, from, fmt.Sprintf("%d messages from a node that is not a current member, on topic %s, ...", len(envs), clip(env.Topic)))
		return
	case env.Inc > inc:
		b.refusedN(len(envs), ReasonIncarnation, from, fmt.Sprintf("%d messages of incarnation %d; the member's is %d", len(envs), env.Inc, inc))
		return
	case env.Inc < inc:
		b.stats.Duplicates.Add(uint64(len(envs)))
		return
	}
	var whys []string
	b.mu.Lock()
	now := b.cfg.now()
	for _, env := range envs {
		if why := b.recv.admit(from, env.Topic); why != "" {
			whys = append(whys, why)
			continue
		}
		dups := b.recv.dropped
		b.enqueueLocked(b.recv.receive(now, from, env, nil))
		if b.recv.dropped != dups {
			b.stats.Duplicates.Add(1)
		}
	}
	b.mu.Unlock()
	if len(whys) > 0 {
		b.refusedN(len(whys), ReasonLimit, from, whys[0])
	}
}

func (b *Bus) refusedN(n int, reason, from, detail string) {
	b.stats.Refused.Add(uint64(n - 1))
	b.refused(reason, from, detail)
}

func (b *Bus) refused(reason, from, detail string) {
	b.stats.Refused.Add(1)
	if b.cfg.refuse != nil {
		b.cfg.refuse(reason, from, detail)
	}
}

// clip shortens what a peer sent for a log line.
func clip(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q… (%d bytes)", s[:64], len(s))
	}
	return fmt.Sprintf("%q", s)
}

func (b *Bus) enqueueLocked(acts []action) {
	if b.recv.opened {
		b.recv.opened = false
		select {
		case b.gapped <- struct{}{}:
		default:
		}
	}
	if len(acts) == 0 {
		return
	}
	b.queue = append(b.queue, acts...)
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// localState is this node's side of a push/pull exchange.
func (b *Bus) localState() []byte {
	b.pubMu.Lock()
	st := exchangeState{Name: b.cfg.self, Inc: b.cfg.incarnation, Seqs: make(map[string]uint64, len(b.seqs))}
	for t, s := range b.seqs {
		st.Seqs[t] = s
	}
	b.pubMu.Unlock()
	data, err := msgpack.Marshal(&st)
	if err != nil {
		b.cfg.log.Error("bus: encoding exchange state", "err", err)
		return nil
	}
	return data
}

// mergeState takes another node's side of a push/pull exchange.
func (b *Bus) mergeState(buf []byte) {
	if len(buf) == 0 {
		return
	}
	var st exchangeState
	if err := msgpack.Unmarshal(buf, &st); err != nil || st.Name == "" {
		b.cfg.log.Warn("bus: ignored unreadable exchange state", "err", err)
		return
	}
	if st.Name == b.cfg.self {
		return
	}
	// The same rules as for messages: memberlist's push/pull comes from
	// a node that holds a gossip key, but the name in it is its word. A
	// non-member's is ignored but not counted as refused: a node's join
	// (or return after a restart) brings its exchange before this node
	// has taken it in as alive, every time, and ignoring it keeps
	// nothing.
	inc, ok := b.cfg.member(st.Name)
	switch {
	case !ok:
		b.cfg.log.Debug("bus: ignored the exchange of a node that is not a current member", "from", st.Name)
		return
	case st.Inc > inc:
		b.refused(ReasonIncarnation, st.Name, fmt.Sprintf("an exchange of incarnation %d; the member's is %d", st.Inc, inc))
		return
	case st.Inc < inc:
		return
	}
	b.mu.Lock()
	acts, refused := b.recv.exchange(b.cfg.now(), st.Name, st.Inc, st.Seqs)
	b.enqueueLocked(acts)
	b.mu.Unlock()
	if refused > 0 {
		b.refused(ReasonLimit, st.Name, fmt.Sprintf("%d of the %d topics of an exchange are over this node's limits per sender", refused, len(st.Seqs)))
	}
}

func (b *Bus) memberRejoined(name string) {
	b.mu.Lock()
	b.enqueueLocked(b.recv.rejoined(name))
	b.mu.Unlock()
}

// busState is the size of what the receiver keeps, for tests.
type busState struct{ senders, streams, held, heldBytes int }

func (b *Bus) state() busState {
	b.mu.Lock()
	defer b.mu.Unlock()
	var st busState
	for _, snd := range b.recv.senders {
		st.senders++
		st.streams += len(snd.streams)
		st.held += snd.held
		st.heldBytes += snd.heldBytes
	}
	return st
}

// memberDeparted is told that a member failed or left.
func (b *Bus) memberDeparted(name string) {
	b.mu.Lock()
	b.enqueueLocked(b.recv.departed(b.cfg.now(), name))
	b.mu.Unlock()
}

// tickLoop closes gaps that outlived the gap timeout: it looks every
// quarter of the timeout while there is a gap, and sleeps while there is
// none until one opens (an idle node's bus ticked 8 times a second for
// nothing).
func (b *Bus) tickLoop() {
	defer b.wg.Done()
	every := max(b.cfg.gap/4, time.Millisecond)
	t := time.NewTimer(every)
	defer t.Stop()
	idle := false
	for {
		select {
		case <-b.stop:
			return
		case <-b.gapped:
			if idle {
				idle = false
				t.Reset(every)
			}
			continue
		case <-t.C:
		}
		b.mu.Lock()
		b.enqueueLocked(b.recv.tick(b.cfg.now()))
		gaps := b.recv.gaps()
		b.mu.Unlock()
		if gaps {
			t.Reset(every)
		} else {
			idle = true
		}
	}
}

// deliverLoop runs the receiver's actions in order, calling subscribers
// without holding the bus's lock.
func (b *Bus) deliverLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.wake:
		}
		b.mu.Lock()
		acts := b.queue
		b.queue = nil
		b.mu.Unlock()
		for _, a := range acts {
			b.run(a)
		}
	}
}

func (b *Bus) run(a action) {
	switch {
	case a.msg != nil:
		b.stats.Delivered.Add(1)
		for _, s := range b.subscribers(a.msg.Topic) {
			s.Deliver(*a.msg)
		}
	case a.missed != nil:
		b.stats.MissedReports.Add(1)
		b.cfg.log.Info("bus: may have missed messages", "from", a.missed.From, "topic", a.missed.Topic,
			"reason", a.missed.Reason, "detail", a.missed.Detail)
		b.reportMissed(*a.missed)
	}
	for _, ack := range a.acks {
		ack()
	}
}

// reportMissed tells the topic's subscribers, or every subscriber when the
// report covers all topics.
func (b *Bus) reportMissed(m Missed) {
	if m.Topic != "" {
		for _, s := range b.subscribers(m.Topic) {
			s.Missed(m)
		}
		return
	}
	b.mu.Lock()
	topics := sortedKeys(b.subs)
	b.mu.Unlock()
	for _, t := range topics {
		mt := m
		mt.Topic = t
		for _, s := range b.subscribers(t) {
			s.Missed(mt)
		}
	}
}

func (b *Bus) subscribers(topic string) []Subscriber {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Subscriber, len(b.subs[topic]))
	for i, s := range b.subs[topic] {
		out[i] = s.s
	}
	return out
}

func (b *Bus) close() {
	b.once.Do(func() {
		b.pubMu.Lock()
		close(b.stop)
		b.out = nil
		b.sentCond.Broadcast()
		b.pubMu.Unlock()
		b.wg.Wait()
	})
}
