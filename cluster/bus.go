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

	pubMu sync.Mutex // orders numbering and sending
	seqs  map[string]uint64

	mu    sync.Mutex
	recv  *receiver
	subs  map[string][]*busSub
	queue []action

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
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
	log    *slog.Logger
}

type busSub struct{ s Subscriber }

func newBus(cfg busConfig) *Bus {
	b := &Bus{
		cfg: cfg, seqs: map[string]uint64{}, recv: newReceiver(cfg.gap),
		subs: map[string][]*busSub{}, wake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	cfg.rpc.HandleOneway(rpcBusOneway, b.onOneway)
	cfg.rpc.Handle(rpcBusSync, b.onSync)
	b.wg.Add(2)
	go b.deliverLoop()
	go b.tickLoop()
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
// so by a Missed report. The error reports encoding failure or a closed
// node; members that could not be reached are counted in SendErrors.
func (b *Bus) Publish(topic string, payload []byte) error {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	data, err := b.numberLocked(topic, payload)
	if err != nil {
		return err
	}
	b.stats.Published.Add(1)
	for _, m := range b.cfg.members() {
		if err := b.cfg.rpc.Notify(m, rpcBusOneway, data); err != nil {
			if errors.Is(err, rpc.ErrClosed) {
				return ErrClosed
			}
			b.stats.SendErrors.Add(1)
			b.cfg.log.Debug("bus: send failed", "to", m, "topic", topic, "err", err)
		}
	}
	return nil
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
	members := b.cfg.members()
	b.pubMu.Unlock()
	if err != nil {
		return nil, nil, err
	}
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

func (b *Bus) numberLocked(topic string, payload []byte) ([]byte, error) {
	select {
	case <-b.stop:
		return nil, ErrClosed
	default:
	}
	b.seqs[topic]++
	data, err := msgpack.Marshal(&envelope{Inc: b.cfg.incarnation, Topic: topic, Seq: b.seqs[topic], Payload: payload})
	if err != nil {
		b.seqs[topic]--
		return nil, fmt.Errorf("cluster: encoding bus message: %w", err)
	}
	return data, nil
}

func (b *Bus) onOneway(from string, body []byte) {
	var env envelope
	if err := msgpack.Unmarshal(body, &env); err != nil {
		b.cfg.log.Warn("bus: dropped undecodable message", "from", from, "err", err)
		return
	}
	b.receive(from, env, nil)
}

func (b *Bus) onSync(ctx context.Context, from string, body []byte) ([]byte, error) {
	var env envelope
	if err := msgpack.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("undecodable bus message: %w", err)
	}
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

// tickLoop closes gaps that outlived the gap timeout.
func (b *Bus) tickLoop() {
	defer b.wg.Done()
	t := time.NewTicker(max(b.cfg.gap/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.mu.Lock()
			b.enqueueLocked(b.recv.tick(b.cfg.now()))
			b.mu.Unlock()
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
		b.pubMu.Unlock()
		b.wg.Wait()
	})
}
