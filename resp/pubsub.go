package resp

import (
	"encoding/binary"
	"slices"
	"sync"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/dmap"
)

// Pub/sub across the cluster: PUBLISH delivers to this node's subscribers
// and sends the message on the bus (topic busTopic) to every other
// member, which delivers to its own. As in Redis Cluster, PUBLISH answers
// the number of receivers on the node it ran on, and delivery is at most
// once: a message a member missed (the bus says so) is not sent again.

const busTopic = "resp.pubsub"

func init() {
	ps := func(name string, arity int, summary, since string, run func(*conn, [][]byte)) *command {
		return &command{name: name, arity: arity, flags: flagPubSub | flagPubSubOK | flagLoading | flagStale, group: "pubsub", summary: summary, since: since, run: run}
	}
	register(
		ps("subscribe", -2, "Listens for messages published to channels.", "2.0.0", func(c *conn, a [][]byte) { c.s.ps.subscribe(c, a[1:], false) }),
		ps("psubscribe", -2, "Listens for messages published to channels that match one or more patterns.", "2.0.0", func(c *conn, a [][]byte) { c.s.ps.subscribe(c, a[1:], true) }),
		ps("unsubscribe", -1, "Stops listening to messages posted to channels.", "2.0.0", func(c *conn, a [][]byte) { c.s.ps.unsubscribe(c, a[1:], false) }),
		ps("punsubscribe", -1, "Stops listening to messages published to channels that match one or more patterns.", "2.0.0", func(c *conn, a [][]byte) { c.s.ps.unsubscribe(c, a[1:], true) }),
		&command{name: "publish", arity: 3, flags: flagPubSub | flagFast | flagLoading | flagStale, group: "pubsub", since: "2.0.0",
			summary: "Posts a message to a channel.", run: cmdPublish},
	)
}

// subState is a connection's subscriptions (under pubsub.mu).
type subState struct {
	n, np int // channels, patterns (read by the conn's goroutine too: atomic enough under pubsub.mu)
	mu    sync.Mutex
}

func (s *subState) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n + s.np
}

func (s *subState) channels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *subState) patterns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.np
}

type pubsub struct {
	s        *Server
	mu       sync.Mutex
	chans    map[string]map[*conn]struct{}
	pats     map[string]map[*conn]struct{}
	byConn   map[*conn]*connSubs
	unsub    func()
	queue    chan published
	stop     chan struct{}
	wg       sync.WaitGroup
	dropped  uint64
	received uint64
}

type connSubs struct {
	chans, pats []string // in subscription order
}

type published struct {
	channel, msg []byte
}

func newPubsub(s *Server) *pubsub {
	return &pubsub{s: s, chans: map[string]map[*conn]struct{}{}, pats: map[string]map[*conn]struct{}{},
		byConn: map[*conn]*connSubs{}, queue: make(chan published, 4096), stop: make(chan struct{})}
}

// start subscribes to the bus and starts the goroutine that delivers
// what other members publish.
func (p *pubsub) start() error {
	if p.s.cfg.Node != nil {
		p.unsub = p.s.cfg.Node.Bus().Subscribe(busTopic, cluster.SubscriberFuncs{OnMessage: p.onBus})
	}
	p.wg.Add(1)
	go p.deliverLoop()
	return nil
}

func (p *pubsub) close() {
	if p.unsub != nil {
		p.unsub()
	}
	close(p.stop)
	p.wg.Wait()
}

func (p *pubsub) onBus(m cluster.Message) {
	ch, msg, ok := decodePublished(m.Payload)
	if !ok {
		return
	}
	select {
	case p.queue <- published{ch, msg}:
	default:
		p.mu.Lock()
		p.dropped++
		p.mu.Unlock()
	}
}

func (p *pubsub) deliverLoop() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case m := <-p.queue:
			p.deliver(m.channel, m.msg)
		}
	}
}

func encodePublished(ch, msg []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(ch)))
	b = append(b, ch...)
	return append(b, msg...)
}

func decodePublished(b []byte) (ch, msg []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// deliver sends a message to this node's subscribers and answers how
// many there were.
func (p *pubsub) deliver(ch, msg []byte) int {
	type target struct {
		c   *conn
		pat string
	}
	var ts []target
	p.mu.Lock()
	p.received++
	for c := range p.chans[string(ch)] {
		ts = append(ts, target{c, ""})
	}
	for pat, cs := range p.pats {
		if dmap.Match(pat, string(ch)) {
			for c := range cs {
				ts = append(ts, target{c, pat})
			}
		}
	}
	p.mu.Unlock()
	for _, t := range ts {
		pat := t.pat
		t.c.push(func(o *out) {
			if pat == "" {
				o.pushHeader(3)
				o.bulkString("message")
			} else {
				o.pushHeader(4)
				o.bulkString("pmessage")
				o.bulkString(pat)
			}
			o.bulk(ch)
			o.bulk(msg)
		}, pushWait)
	}
	return len(ts)
}

func cmdPublish(c *conn, a [][]byte) {
	n := c.s.ps.deliver(a[1], a[2])
	if c.s.cfg.Node != nil {
		if err := c.s.cfg.Node.Bus().Publish(busTopic, encodePublished(a[1], a[2])); err != nil {
			c.o.err(errorText(err))
			return
		}
	}
	c.o.int(int64(n))
}

func (p *pubsub) subscribe(c *conn, names [][]byte, pattern bool) {
	kind := "subscribe"
	if pattern {
		kind = "psubscribe"
	}
	for _, nb := range names {
		name := string(nb)
		p.mu.Lock()
		m := p.chans
		if pattern {
			m = p.pats
		}
		cs := p.byConn[c]
		if cs == nil {
			cs = &connSubs{}
			p.byConn[c] = cs
		}
		if m[name] == nil {
			m[name] = map[*conn]struct{}{}
		}
		if _, ok := m[name][c]; !ok {
			m[name][c] = struct{}{}
			if pattern {
				cs.pats = append(cs.pats, name)
			} else {
				cs.chans = append(cs.chans, name)
			}
		}
		c.sub.mu.Lock()
		c.sub.n, c.sub.np = len(cs.chans), len(cs.pats)
		c.sub.mu.Unlock()
		total := len(cs.chans) + len(cs.pats)
		p.mu.Unlock()
		c.o.pushHeader(3)
		c.o.bulkString(kind)
		c.o.bulkString(name)
		c.o.int(int64(total))
	}
}

func (p *pubsub) unsubscribe(c *conn, names [][]byte, pattern bool) {
	kind := "unsubscribe"
	if pattern {
		kind = "punsubscribe"
	}
	p.mu.Lock()
	cs := p.byConn[c]
	if cs == nil {
		cs = &connSubs{}
	}
	var list []string
	if len(names) == 0 {
		if pattern {
			list = slices.Clone(cs.pats)
		} else {
			list = slices.Clone(cs.chans)
		}
	} else {
		for _, n := range names {
			list = append(list, string(n))
		}
	}
	p.mu.Unlock()
	if len(list) == 0 {
		c.o.pushHeader(3)
		c.o.bulkString(kind)
		c.o.null()
		c.o.int(int64(c.sub.count()))
		return
	}
	for _, name := range list {
		p.mu.Lock()
		m := p.chans
		if pattern {
			m = p.pats
		}
		if set := m[name]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(m, name)
			}
		}
		if pattern {
			cs.pats = slices.DeleteFunc(cs.pats, func(s string) bool { return s == name })
		} else {
			cs.chans = slices.DeleteFunc(cs.chans, func(s string) bool { return s == name })
		}
		total := len(cs.chans) + len(cs.pats)
		if total == 0 {
			delete(p.byConn, c)
		}
		c.sub.mu.Lock()
		c.sub.n, c.sub.np = len(cs.chans), len(cs.pats)
		c.sub.mu.Unlock()
		p.mu.Unlock()
		c.o.pushHeader(3)
		c.o.bulkString(kind)
		c.o.bulkString(name)
		c.o.int(int64(total))
	}
}

// subscribed reports whether c is subscribed to channel.
func (p *pubsub) subscribed(c *conn, channel string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.chans[channel][c]
	return ok
}

// drop forgets a connection's subscriptions.
func (p *pubsub) drop(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.byConn[c]
	if cs == nil {
		return
	}
	for _, ch := range cs.chans {
		delete(p.chans[ch], c)
		if len(p.chans[ch]) == 0 {
			delete(p.chans, ch)
		}
	}
	for _, pat := range cs.pats {
		delete(p.pats[pat], c)
		if len(p.pats[pat]) == 0 {
			delete(p.pats, pat)
		}
	}
	delete(p.byConn, c)
	c.sub.mu.Lock()
	c.sub.n, c.sub.np = 0, 0
	c.sub.mu.Unlock()
}

func (p *pubsub) clients() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byConn)
}

func (p *pubsub) channels() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.chans)
}
