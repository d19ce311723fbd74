package resp

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/shoal-dev/shoal/dmap"
)

// conn is one client connection. Its goroutine reads a pipeline of
// commands at a time, runs them and writes their replies in one write.
// Other goroutines (invalidations, published messages) write pushes under
// wmu, between batches' replies.
type conn struct {
	s       *Server
	nc      net.Conn
	id      int64
	rd      *redcon.Reader
	lim     *limitReader
	o       out // the current batch's replies (the conn's goroutine only)
	addr    string
	laddr   string
	created time.Time

	// Set by the conn's goroutine; read by CLIENT LIST on others.
	mu      sync.Mutex
	name    string
	lastCmd string
	lastAt  time.Time
	libName string
	libVer  string
	snap    connSnap // the conn goroutine's state as of its last batch

	ncmd        int // commands run
	user        *Principal
	multi       *multiState // between MULTI and EXEC/DISCARD
	clusterMode bool
	quit        bool

	// The batch: operations of consecutive data commands, run at the
	// owners in one call when a command that is not one comes, or at the
	// end of the pipeline.
	items     []item
	ops       []dmap.Op
	batchOpt  dmap.DoOptions
	trackKeys []string // keys the batch reads, registered before it runs

	wmu    sync.Mutex
	proto3 bool     // RESP3 (under wmu: pushers read it)
	busy   bool     // a batch is running: pushes are repeated after it
	after  [][]byte // pushes to write again after the batch's replies
	dead   atomic.Bool

	tr  trackState // client-side caching (the conn's goroutine; tracker under its lock)
	sub subState   // pub/sub
}

// item is one command of a batch: its operations' replies are written by
// done, in order, once the batch ran.
type item struct {
	spec  *command
	start time.Time
	n     int
	keys  []string // read keys to remember for tracking
	done  func(c *conn, rs []dmap.Result)
	err   string
}

func newConn(s *Server, nc net.Conn) *conn {
	lim := &limitReader{r: nc, max: s.cfg.MaxCommandBytes}
	c := &conn{s: s, nc: nc, id: s.nextID.Add(1), lim: lim, rd: redcon.NewReader(lim),
		addr: nc.RemoteAddr().String(), laddr: nc.LocalAddr().String(), created: time.Now()}
	return c
}

// limitReader fails a read once more than max bytes were read since the
// last reset (the end of a pipeline): one command may not grow the
// reader's buffer without bound.
type limitReader struct {
	r    io.Reader
	n    int64
	max  int64
	over bool
}

var errTooBig = errors.New("Protocol error: command too large")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n >= l.max {
		l.over = true
		return 0, errTooBig
	}
	if int64(len(p)) > l.max-l.n {
		p = p[:l.max-l.n]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	return n, err
}

// serve reads and runs commands until the client quits, the connection
// breaks or the server closes.
func (c *conn) serve() {
	defer c.close()
	for !c.quit {
		cmds, err := c.rd.ReadCommands()
		if err != nil {
			var pe interface{ Error() string }
			if c.lim.over {
				c.o.err("ERR " + errTooBig.Error())
			} else if errors.As(err, &pe) && strings.HasPrefix(err.Error(), "Protocol error") {
				c.o.err("ERR " + err.Error())
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
				c.o.err("ERR Protocol error: " + err.Error())
			}
			if len(c.o.b) > 0 {
				c.flush()
			}
			return
		}
		c.lim.n = 0
		c.setBusy(true)
		for i := range cmds {
			if len(cmds[i].Args) == 0 {
				continue
			}
			c.exec(cmds[i].Args)
			if c.quit {
				break
			}
		}
		c.runBatch()
		c.snapshot()
		if !c.flush() {
			return
		}
	}
}

// connSnap is what CLIENT LIST shows of another connection.
type connSnap struct {
	tracking bool
	resp3    bool
	user     string
	redir    int64
}

func (c *conn) snapshot() {
	s := connSnap{tracking: c.tr.on(), resp3: c.o.resp3, user: "default", redir: c.tr.getRedir()}
	if c.user != nil {
		s.user = c.user.Name
	}
	c.mu.Lock()
	c.snap = s
	c.mu.Unlock()
}

func isConnReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

func (c *conn) setBusy(b bool) {
	c.wmu.Lock()
	c.busy = b
	c.wmu.Unlock()
}

// flush writes the batch's replies, then the pushes that came while it
// ran, and ends the batch. It reports false if the connection is broken.
func (c *conn) flush() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.busy = false
	buf := c.o.b
	for _, p := range c.after {
		buf = append(buf, p...)
	}
	c.after = c.after[:0]
	ok := true
	if len(buf) > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
		if _, err := c.nc.Write(buf); err != nil {
			ok = false
		}
	}
	if cap(buf) > 1<<20 {
		buf = nil
	}
	c.o.b = buf[:0]
	return ok && !c.dead.Load()
}

// push writes an out-of-band message (built by build for the connection's
// protocol) now, and again after the running batch's replies if one is
// running: a reply computed before the message was sent must not arrive
// after it unrepeated. A client that cannot take it within wait is
// disconnected: a dropped connection is how a client learns that all it
// cached from it is gone.
func (c *conn) push(build func(o *out), wait time.Duration) {
	if c.dead.Load() {
		return
	}
	deadline := time.Now().Add(wait)
	for !c.wmu.TryLock() {
		if time.Now().After(deadline) {
			c.s.pushKills.Add(1)
			c.kill()
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
	defer c.wmu.Unlock()
	o := out{resp3: c.proto3}
	build(&o)
	if c.busy {
		c.after = append(c.after, o.b)
	}
	c.nc.SetWriteDeadline(deadline)
	if _, err := c.nc.Write(o.b); err != nil {
		if !c.dead.Load() {
			c.s.pushKills.Add(1)
		}
		c.kill()
	}
}

// kill closes the connection from another goroutine.
func (c *conn) kill() {
	if c.dead.CompareAndSwap(false, true) {
		c.nc.Close()
	}
}

func (c *conn) close() {
	c.dead.Store(true)
	c.nc.Close()
	c.s.track.drop(c)
	c.s.ps.drop(c)
}

// setProto switches the connection's protocol (HELLO).
func (c *conn) setProto(resp3 bool) {
	c.wmu.Lock()
	c.proto3 = resp3
	c.wmu.Unlock()
	c.o.resp3 = resp3
}

// redirects reports whether this connection is answered MOVED and
// CROSSSLOT.
func (c *conn) redirects() bool {
	switch c.s.cfg.Redirect {
	case RedirectAlways:
		return true
	case RedirectNever:
		return false
	}
	return c.clusterMode
}

// exec runs one command: a data command joins the batch, any other runs
// the batch first and then itself.
func (c *conn) exec(args [][]byte) {
	start := time.Now()
	c.ncmd++
	spec := lookup(args[0])
	c.s.totCmd.Add(1)
	if spec == nil {
		c.dirty()
		c.queueErr(nil, start, unknownCommand(args))
		return
	}
	c.mu.Lock()
	c.lastCmd, c.lastAt = spec.name, start
	c.mu.Unlock()
	if !spec.arityOK(len(args)) {
		c.dirty()
		c.queueErr(spec, start, "ERR wrong number of arguments for '"+spec.name+"' command")
		return
	}
	if c.user == nil && !c.s.cfg.Anonymous && spec.flags&flagNoAuth == 0 {
		c.queueErr(spec, start, "NOAUTH Authentication required.")
		return
	}
	if c.sub.count() > 0 && !c.o.resp3 && spec.flags&flagPubSubOK == 0 {
		c.queueErr(spec, start, "ERR Can't execute '"+spec.name+"': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
		return
	}
	if spec.flags&flagAdmin != 0 && (c.user == nil || !c.user.Admin) {
		c.queueErr(spec, start, "NOPERM this user has no permissions to run the '"+spec.name+"' command")
		return
	}
	if spec.firstKey > 0 && c.redirects() {
		if e := c.checkSlots(spec, args); e != "" {
			c.dirty()
			c.queueErr(spec, start, e)
			return
		}
	}
	if c.multi != nil && !c.multi.running && spec.flags&flagMultiCtl == 0 {
		c.runBatch()
		c.multi.queued = append(c.multi.queued, args)
		c.o.simple("QUEUED")
		return
	}
	if spec.plan != nil {
		p, err := spec.plan(c, args)
		if err != "" {
			c.queueErr(spec, start, err)
			return
		}
		opt := c.readOptions(spec)
		if len(c.items) > 0 && opt != c.batchOpt {
			c.runBatch()
		}
		c.batchOpt = opt
		it := item{spec: spec, start: start, n: len(p.ops), done: p.done}
		if opt.Track && spec.flags&flagRead != 0 {
			for _, k := range spec.keys(args) {
				it.keys = append(it.keys, string(k))
			}
		}
		c.items = append(c.items, it)
		c.ops = append(c.ops, p.ops...)
		return
	}
	c.runBatch()
	mark := len(c.o.b)
	spec.run(c, args)
	c.s.stats.record(spec, time.Since(start), len(c.o.b) > mark && c.o.b[mark] == '-')
}

// execQueued runs a command EXEC takes from the transaction's queue.
func (c *conn) execQueued(args [][]byte) { c.exec(args) }

func (c *conn) queueErr(spec *command, start time.Time, text string) {
	if len(c.items) == 0 {
		c.o.err(text)
		c.s.stats.record(spec, time.Since(start), true)
		return
	}
	c.items = append(c.items, item{spec: spec, start: start, err: text})
}

// runBatch runs the batch's operations at their owners and writes each
// command's reply in order.
func (c *conn) runBatch() {
	if len(c.items) == 0 {
		return
	}
	var rs []dmap.Result
	var err error
	if len(c.ops) > 0 {
		if c.batchOpt.Track {
			for i := range c.items {
				c.trackKeys = append(c.trackKeys, c.items[i].keys...)
			}
			c.tr.beginReads(c, c.trackKeys)
		}
		ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.Timeout)
		rs, err = c.s.m.Do(ctx, c.ops, c.batchOpt)
		cancel()
	}
	off := 0
	for i := range c.items {
		it := &c.items[i]
		mark := len(c.o.b)
		switch {
		case it.err != "":
			c.o.err(it.err)
		case err != nil:
			c.o.err(errorText(err))
		default:
			it.done(c, rs[off:off+it.n])
		}
		off += it.n
		c.s.stats.record(it.spec, time.Since(it.start), len(c.o.b) > mark && c.o.b[mark] == '-')
	}
	clear(c.items)
	clear(c.ops)
	c.items, c.ops, c.trackKeys = c.items[:0], c.ops[:0], c.trackKeys[:0]
}

// errorText is the reply to a failed call: dmap's errors carry Redis's
// codes (TRYAGAIN, CLUSTERDOWN); anything else is an ERR.
func errorText(err error) string {
	t := err.Error()
	if i := strings.IndexByte(t, ' '); i > 0 && strings.ToUpper(t[:i]) == t[:i] {
		return t
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return "TRYAGAIN " + t
	}
	return "ERR " + t
}

// unknownCommand is Redis's text for a command it does not know.
func unknownCommand(args [][]byte) string {
	var a strings.Builder
	for _, arg := range args[1:] {
		if a.Len() >= 128 {
			break
		}
		a.WriteString("'")
		a.WriteString(trunc(string(arg), 128-a.Len()))
		a.WriteString("' ")
	}
	return "ERR unknown command '" + trunc(string(args[0]), 128) + "', with args beginning with: " + a.String()
}

func trunc(s string, n int) string {
	if n < 0 {
		n = 0
	}
	if len(s) > n {
		return s[:n]
	}
	return s
}
