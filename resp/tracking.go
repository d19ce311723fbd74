package resp

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/dmap"
)

// Client-side caching (CLIENT TRACKING).
//
// A tracking connection's reads are sent to the owners with
// dmap.DoOptions.Track: the owner registers this node as a holder of each
// key it reads, under the partition's lock, and sends the next change of
// the key to this node — and waits until this node has handled it —
// before it acknowledges the write that made it. This node's tracker
// remembers which of its connections read which key and turns each such
// invalidation into a push to those connections (RESP3 "invalidate", or a
// message on __redis__:invalidate to a RESP2 connection's REDIRECT
// target).
//
// Why a client never keeps a value after the write that replaced it was
// acknowledged to another client:
//
//  1. The connection is registered here for the keys of its reads before
//     the reads are sent, so an invalidation that reaches this node while
//     they are in flight is not missed.
//  2. The owner acknowledges a write W of key k only after every holder of
//     k registered before W — every node whose clients may hold a value of
//     k older than W — handled W's invalidation (or, not answering, was
//     excluded and its lease ran out: this node then tells every tracking
//     connection to drop everything, below). A read that reaches the owner
//     after W sees W's value or a later one.
//  3. Handling the invalidation here means writing the push to the
//     connection's socket (or closing the connection, if it cannot take it
//     within pushWait). A push that arrives while the connection's
//     pipeline runs is written then and again after the pipeline's
//     replies, so a reply read before W can never arrive after the last
//     copy of W's invalidation. A client that reads its socket in order
//     therefore drops the old value before it can see any reply sent after
//     W was acknowledged, and any reply of a read that started after W.
//  4. Whatever the owner may have forgotten is dropped whole: when this
//     node's lease lapses or is reset, every tracking connection is told to
//     drop everything; when a partition changes owner (the new owner knows
//     no holders), the keys its connections read from it are invalidated;
//     a connection that is lost takes its client's cache with it (client
//     libraries flush on disconnect), and a RESP2 connection whose REDIRECT
//     target goes away is closed.
//
// NOLOOP is accepted and ignored: a client may be told of its own writes
// (an extra invalidation is never wrong). BCAST connections are tracked
// per key as well, and this node holds every partition (dmap.CodeHold) so
// that changes of keys they never read are reported for their prefixes.

// pushWait is how long an invalidation may wait for a connection.
const pushWait = 200 * time.Millisecond

// Tracking modes.
const (
	trackOff = iota
	trackDefault
	trackBcast
	trackOptIn
	trackOptOut
)

// trackState is a connection's tracking settings (its goroutine's; mode
// and redirect are also read by the tracker under its lock).
type trackState struct {
	mode      int
	redirect  int64
	prefixes  []string
	cacheNext int // OPTIN/OPTOUT: 1 yes, -1 no, for the next command only
	cachingN  int // the command count at which caching was set
}

func (t *trackState) on() bool { return t.mode != trackOff }

func (t *trackState) getRedir() int64 {
	if t.mode == trackOff {
		return -1
	}
	if t.redirect == 0 {
		return 0
	}
	return t.redirect
}

// readOptions are the map options of a data command: its reads are
// tracked if the connection tracks them.
func (c *conn) readOptions(spec *command) dmap.DoOptions {
	t := &c.tr
	if t.mode == trackOff || spec.flags&flagRead == 0 {
		return dmap.DoOptions{}
	}
	fresh := t.cachingN == c.ncmd-1 || c.multi != nil && c.multi.caching
	switch t.mode {
	case trackOptIn:
		return dmap.DoOptions{Track: fresh && t.cacheNext > 0}
	case trackOptOut:
		return dmap.DoOptions{Track: !(fresh && t.cacheNext < 0)}
	}
	return dmap.DoOptions{Track: true}
}

// beginReads registers the connection for the keys its batch reads,
// before the reads are sent.
func (t *trackState) beginReads(c *conn, keys []string) {
	if len(keys) > 0 {
		c.s.track.register(c, keys)
	}
}

func (c *conn) isProto3() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.proto3
}

func (t *trackState) off(c *conn) {
	if t.mode != trackOff {
		c.s.track.drop(c)
	}
	*t = trackState{}
}

func (t *trackState) command(c *conn, a [][]byte) {
	if len(a) < 3 {
		c.o.err("ERR wrong number of arguments for 'client|tracking' command")
		return
	}
	onoff := upper(a[2])
	if onoff != "ON" && onoff != "OFF" {
		c.o.err(errSyntax)
		return
	}
	var ns trackState
	ns.mode = trackDefault
	bcast, optin, optout := false, false, false
	for i := 3; i < len(a); i++ {
		switch opt := upper(a[i]); {
		case opt == "REDIRECT" && i+1 < len(a):
			id, ok := parseInt(a[i+1])
			if !ok {
				c.o.err(errNotInteger)
				return
			}
			ns.redirect = id
			i++
		case opt == "PREFIX" && i+1 < len(a):
			ns.prefixes = append(ns.prefixes, string(a[i+1]))
			i++
		case opt == "BCAST":
			bcast = true
		case opt == "OPTIN":
			optin = true
		case opt == "OPTOUT":
			optout = true
		case opt == "NOLOOP":
		default:
			c.o.err(errSyntax)
			return
		}
	}
	if onoff == "OFF" {
		t.off(c)
		c.o.ok()
		return
	}
	switch {
	case len(ns.prefixes) > 0 && !bcast:
		c.o.err("ERR PREFIX option requires BCAST mode to be enabled")
		return
	case optin && optout:
		c.o.err("ERR You can't use both OPTIN and OPTOUT")
		return
	case bcast && (optin || optout):
		c.o.err("ERR OPTIN and OPTOUT are not compatible with BCAST")
		return
	case t.mode != trackOff && (t.mode == trackBcast) != bcast:
		c.o.err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")
		return
	}
	switch {
	case bcast:
		ns.mode = trackBcast
		if len(ns.prefixes) == 0 {
			ns.prefixes = []string{""}
		}
	case optin:
		ns.mode = trackOptIn
	case optout:
		ns.mode = trackOptOut
	}
	if ns.redirect != 0 {
		if ns.redirect == c.id || c.s.byID(ns.redirect) == nil {
			c.o.err("ERR The client ID you want redirect to does not exist")
			return
		}
	} else if !c.o.resp3 {
		c.o.err("ERR shoal: CLIENT TRACKING in RESP2 needs REDIRECT to a connection subscribed to __redis__:invalidate (or HELLO 3)")
		return
	}
	if t.mode != trackOff {
		c.s.track.drop(c)
	}
	*t = ns
	if err := c.s.track.enable(c); err != nil {
		*t = trackState{}
		c.o.err(errorText(err))
		return
	}
	c.o.ok()
}

func (t *trackState) caching(c *conn, v []byte) {
	yes := strings.EqualFold(string(v), "yes")
	if !yes && !strings.EqualFold(string(v), "no") {
		c.o.err(errSyntax)
		return
	}
	switch {
	case t.mode != trackOptIn && t.mode != trackOptOut:
		c.o.err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
	case t.mode == trackOptIn && !yes:
		c.o.err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
	case t.mode == trackOptOut && yes:
		c.o.err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
	default:
		t.cacheNext, t.cachingN = -1, c.ncmd
		if yes {
			t.cacheNext = 1
		}
		c.o.ok()
	}
}

func (t *trackState) info(c *conn) {
	var flags []string
	switch t.mode {
	case trackOff:
		flags = []string{"off"}
	case trackDefault:
		flags = []string{"on"}
	case trackBcast:
		flags = []string{"on", "bcast"}
	case trackOptIn:
		flags = []string{"on", "optin"}
	case trackOptOut:
		flags = []string{"on", "optout"}
	}
	c.o.mapHeader(3)
	c.o.bulkString("flags")
	c.o.setHeader(len(flags))
	for _, f := range flags {
		c.o.bulkString(f)
	}
	c.o.bulkString("redirect")
	c.o.int(t.getRedir())
	c.o.bulkString("prefixes")
	var ps []string
	if t.mode == trackBcast {
		ps = t.prefixes
	}
	c.o.strings(ps)
}

// tracker is the node's registry of what its tracking connections read.
type tracker struct {
	s *Server

	mu      sync.Mutex
	parts   []map[string]map[*conn]struct{} // partition → key → readers
	nkeys   int
	conns   map[*conn]int64    // tracking connections → their REDIRECT target (0: none)
	targets map[int64]int      // REDIRECT targets → connections redirecting to them
	bcast   map[*conn][]string // BCAST connections' prefixes
	holding bool               // this node holds every partition
	holdMu  sync.Mutex         // orders hold changes
}

func newTracker(s *Server) *tracker {
	return &tracker{s: s, parts: make([]map[string]map[*conn]struct{}, s.m.Partitions()),
		conns: map[*conn]int64{}, targets: map[int64]int{}, bcast: map[*conn][]string{}}
}

func (t *tracker) clients() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

func (t *tracker) keys() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nkeys
}

// enable records a connection that turned tracking on (and, for BCAST,
// has this node hold every partition).
func (t *tracker) enable(c *conn) error {
	t.mu.Lock()
	t.conns[c] = c.tr.redirect
	if c.tr.redirect != 0 {
		t.targets[c.tr.redirect]++
	}
	needHold := false
	if c.tr.mode == trackBcast {
		t.bcast[c] = slices.Clone(c.tr.prefixes)
		needHold = !t.holding
	}
	t.mu.Unlock()
	if needHold {
		return t.setHold(true)
	}
	return nil
}

// setHold registers (or unregisters) this node with every owner for
// every change.
func (t *tracker) setHold(on bool) error {
	t.holdMu.Lock()
	defer t.holdMu.Unlock()
	op := dmap.Op{Code: dmap.CodeHold}
	if !on {
		op.Flags = dmap.FlagPersist
	}
	ctx, cancel := context.WithTimeout(t.s.ctx, t.s.cfg.Timeout)
	defer cancel()
	if _, err := t.s.m.DoEach(ctx, allPartitions(t.s.m.Partitions()), op); err != nil {
		return err
	}
	t.mu.Lock()
	t.holding = on
	t.mu.Unlock()
	return nil
}

// register remembers that c reads keys.
func (t *tracker) register(c *conn, keys []string) {
	n := t.s.m.Partitions()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.conns[c]; !ok {
		return
	}
	for _, k := range keys {
		p := dmap.PartitionOf(k, n)
		if t.parts[p] == nil {
			t.parts[p] = map[string]map[*conn]struct{}{}
		}
		rs := t.parts[p][k]
		if rs == nil {
			rs = map[*conn]struct{}{}
			t.parts[p][k] = rs
			t.nkeys++
		}
		rs[c] = struct{}{}
	}
}

// drop forgets a connection (tracking off, or closed). A connection that
// others redirect to takes their tracking with it: they are closed.
func (t *tracker) drop(c *conn) {
	t.mu.Lock()
	redir, tracking := t.conns[c]
	if !tracking && t.targets[c.id] == 0 {
		t.mu.Unlock()
		return
	}
	if tracking && redir != 0 {
		if t.targets[redir]--; t.targets[redir] <= 0 {
			delete(t.targets, redir)
		}
	}
	delete(t.conns, c)
	delete(t.bcast, c)
	for p, keys := range t.parts {
		for k, rs := range keys {
			if _, ok := rs[c]; ok {
				delete(rs, c)
				if len(rs) == 0 {
					delete(keys, k)
					t.nkeys--
				}
			}
		}
		if len(keys) == 0 {
			t.parts[p] = nil
		}
	}
	var orphans []*conn
	if t.targets[c.id] > 0 {
		for o, r := range t.conns {
			if r == c.id {
				orphans = append(orphans, o)
			}
		}
	}
	unhold := t.holding && len(t.bcast) == 0
	t.mu.Unlock()
	for _, o := range orphans {
		o.kill()
	}
	if unhold && t.s.ctx.Err() == nil {
		t.s.wg.Add(1) // Close waits for it; its call ends with the server's context
		go func() {
			defer t.s.wg.Done()
			if err := t.setHold(false); err != nil {
				t.s.cfg.Logger.Debug("resp: releasing the partitions' holds", "err", err)
			}
		}()
	}
}

// invalidate tells the connections that read keys of partition p (keys;
// every key of p when nil; every key when p < 0) that they changed.
func (t *tracker) invalidate(p int, keys []string) {
	type note struct {
		keys  []string
		all   bool
		redir int64
	}
	notes := map[*conn]*note{}
	add := func(c *conn, k string) {
		n := notes[c]
		if n == nil {
			n = &note{redir: t.conns[c]}
			notes[c] = n
		}
		n.keys = append(n.keys, k)
	}
	t.mu.Lock()
	switch {
	case p < 0:
		for c, r := range t.conns {
			notes[c] = &note{all: true, redir: r}
		}
		for i := range t.parts {
			t.parts[i] = nil
		}
		t.nkeys = 0
	case p >= len(t.parts):
	case keys == nil:
		for k, rs := range t.parts[p] {
			for c := range rs {
				add(c, k)
			}
			t.nkeys--
		}
		t.parts[p] = nil
	default:
		for _, k := range keys {
			if rs := t.parts[p][k]; rs != nil {
				for c := range rs {
					add(c, k)
				}
				delete(t.parts[p], k)
				t.nkeys--
			}
			for c, prefixes := range t.bcast {
				if _, seen := notes[c]; seen && slices.Contains(notes[c].keys, k) {
					continue
				}
				for _, pre := range prefixes {
					if strings.HasPrefix(k, pre) {
						add(c, k)
						break
					}
				}
			}
		}
	}
	t.mu.Unlock()
	if p < 0 || keys == nil {
		t.s.trackResets.Add(uint64(len(notes)))
	}
	for c, n := range notes {
		keys := n.keys
		if n.all {
			keys = nil
		}
		t.s.deliverInvalidation(c, n.redir, keys)
	}
}

// deliverInvalidation pushes an invalidation of keys (nil: everything)
// to the tracking connection c, or to its REDIRECT target.
// A RESP2 target that is not subscribed to __redis__:invalidate cannot be
// told: c is closed instead.
func (s *Server) deliverInvalidation(c *conn, redirect int64, keys []string) {
	to := c
	if redirect != 0 {
		to = s.byID(redirect)
		if to == nil || !to.isProto3() && !s.ps.subscribed(to, invalidateChannel) {
			c.kill()
			return
		}
	}
	to.push(func(o *out) {
		if o.resp3 {
			o.pushHeader(2)
			o.bulkString("invalidate")
		} else {
			o.array(3)
			o.bulkString("message")
			o.bulkString(invalidateChannel)
		}
		if keys == nil {
			o.nullArray()
			return
		}
		o.strings(keys)
	}, pushWait)
}

// invalidateChannel is where RESP2 clients receive invalidations.
const invalidateChannel = "__redis__:invalidate"
