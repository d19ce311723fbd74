package resp

// Transactions: MULTI queues commands and EXEC runs them in order as one
// pipeline, their data commands in one call to the owners. Those of one
// partition (one slot, one {hash tag}) run there atomically, in order, as
// a Redis Cluster transaction (which must name one slot) does; commands
// on several partitions are not isolated from other clients. A
// connection in cluster mode is held to Redis Cluster's rule: EXEC of a
// transaction whose keys are in several slots is answered CROSSSLOT (MOVED
// for one slot served elsewhere) and discards it. WATCH is
// not supported. CLIENT CACHING YES before MULTI applies to the whole
// transaction (as rueidis uses it: CACHING YES, MULTI, PTTL, GET, EXEC).

type multiState struct {
	queued  [][][]byte
	dirty   bool // a command was refused while queuing: EXEC aborts
	caching bool // CLIENT CACHING came just before MULTI
	running bool
}

func init() {
	tx := func(name string, arity int, summary string, run func(*conn, [][]byte)) *command {
		return &command{name: name, arity: arity, flags: flagMultiCtl | flagFast | flagNoScript | flagLoading | flagStale,
			group: "transactions", summary: summary, since: "1.2.0", run: run}
	}
	register(
		tx("multi", 1, "Starts a transaction.", cmdMulti),
		tx("exec", 1, "Executes all commands in a transaction.", cmdExec),
		tx("discard", 1, "Discards a transaction.", cmdDiscard),
		tx("watch", -2, "Monitors changes to keys to determine the execution of a transaction.", func(c *conn, _ [][]byte) {
			c.o.err("ERR shoal does not support WATCH")
		}),
	)
	for _, n := range []string{"quit", "reset"} {
		commands[n].flags |= flagMultiCtl
	}
}

// dirty marks the open transaction as refused.
func (c *conn) dirty() {
	if c.multi != nil && !c.multi.running {
		c.multi.dirty = true
	}
}

func cmdMulti(c *conn, _ [][]byte) {
	if c.multi != nil {
		c.o.err("ERR MULTI calls can not be nested")
		return
	}
	c.multi = &multiState{caching: c.tr.cachingN == c.ncmd-1}
	c.o.ok()
}

func cmdDiscard(c *conn, _ [][]byte) {
	if c.multi == nil {
		c.o.err("ERR DISCARD without MULTI")
		return
	}
	c.multi = nil
	c.o.ok()
}

func cmdExec(c *conn, _ [][]byte) {
	m := c.multi
	if m == nil {
		c.o.err("ERR EXEC without MULTI")
		return
	}
	if c.redirects() {
		// As Redis Cluster: a transaction names one slot, which this
		// node serves, or EXEC discards it with CROSSSLOT (or MOVED).
		var keys [][]byte
		for _, args := range m.queued {
			if spec := lookup(args[0]); spec != nil {
				keys = append(keys, spec.keys(args)...)
			}
		}
		if e := c.checkKeys(keys); e != "" {
			c.multi = nil
			c.o.err(e)
			return
		}
	}
	if m.dirty {
		c.multi = nil
		c.o.err("EXECABORT Transaction discarded because of previous errors.")
		return
	}
	m.running = true
	c.o.array(len(m.queued))
	q := m.queued
	m.queued = nil
	// The queued commands run as a pipeline; c.multi stays set (not
	// queuing: running) so that CACHING applies to all of them.
	for _, args := range q {
		c.execQueued(args)
	}
	c.runBatch()
	c.multi = nil
}
