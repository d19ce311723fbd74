package resp

import (
	"math"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/dmap"
)

// Command flags.
const (
	flagRead     = 1 << iota // reads keys (tracked for client-side caching)
	flagWrite                // writes keys
	flagNoAuth               // allowed before AUTH
	flagPubSubOK             // allowed in RESP2's subscribed context
	flagAdmin                // for administrators
	flagFast
	flagNoScript
	flagLoading
	flagStale
	flagPubSub
	flagMultiCtl // runs at once between MULTI and EXEC
)

var flagNames = []struct {
	f    int
	name string
}{
	{flagWrite, "write"}, {flagRead, "readonly"}, {flagAdmin, "admin"}, {flagPubSub, "pubsub"},
	{flagNoScript, "noscript"}, {flagLoading, "loading"}, {flagStale, "stale"}, {flagFast, "fast"},
	{flagNoAuth, "no_auth"},
}

// command is one command: its arity (negative: at least), key positions
// (Redis's first, last, step), and either a plan (a data command: its
// operations at the owners and how to answer from their results) or run.
type command struct {
	name                    string
	arity                   int
	flags                   int
	firstKey, lastKey, step int
	group, summary, since   string
	plan                    func(c *conn, args [][]byte) (plan, string)
	run                     func(c *conn, args [][]byte)
}

// plan is a data command's operations and its reply.
type plan struct {
	ops  []dmap.Op
	done func(c *conn, rs []dmap.Result)
}

func (cmd *command) arityOK(n int) bool {
	if cmd.arity >= 0 {
		return n == cmd.arity
	}
	return n >= -cmd.arity
}

// keys returns the command's key arguments.
func (cmd *command) keys(args [][]byte) [][]byte {
	if cmd.firstKey <= 0 || cmd.firstKey >= len(args) {
		return nil
	}
	last := cmd.lastKey
	if last < 0 {
		last = len(args) + last
	}
	last = min(last, len(args)-1)
	var out [][]byte
	for i := cmd.firstKey; i <= last; i += max(cmd.step, 1) {
		out = append(out, args[i])
	}
	return out
}

var commands = map[string]*command{}

// lookup finds a command by name, in any case.
func lookup(name []byte) *command {
	if cmd, ok := commands[string(name)]; ok {
		return cmd
	}
	return commands[strings.ToLower(string(name))]
}

func register(cmds ...*command) {
	for _, c := range cmds {
		commands[c.name] = c
	}
}

func init() {
	str := func(name string, arity, flags int, summary string, p func(*conn, [][]byte) (plan, string)) *command {
		return &command{name: name, arity: arity, flags: flags, firstKey: 1, lastKey: 1, step: 1, group: "string", summary: summary, since: "1.0.0", plan: p}
	}
	hash := func(name string, arity, flags int, summary string, p func(*conn, [][]byte) (plan, string)) *command {
		return &command{name: name, arity: arity, flags: flags, firstKey: 1, lastKey: 1, step: 1, group: "hash", summary: summary, since: "2.0.0", plan: p}
	}
	key := func(name string, arity, flags int, summary string, p func(*conn, [][]byte) (plan, string)) *command {
		return &command{name: name, arity: arity, flags: flags, firstKey: 1, lastKey: 1, step: 1, group: "generic", summary: summary, since: "1.0.0", plan: p}
	}
	const r, w, f = flagRead, flagWrite, flagFast
	register(
		str("get", 2, r|f, "Returns the string value of a key.", planGet(dmap.CodeGet)),
		str("getdel", 2, w|f, "Returns the string value of a key after deleting the key.", planGet(dmap.CodeGetDel)),
		str("getex", -2, w|f, "Returns the string value of a key after setting its expiration time.", planGetEx),
		str("set", -3, w, "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", planSet),
		str("setnx", 3, w|f, "Set the string value of a key only when the key doesn't exist.", planSetNX),
		str("incr", 2, w|f, "Increments the integer value of a key by one.", planIncr(1, false)),
		str("decr", 2, w|f, "Decrements the integer value of a key by one.", planIncr(-1, false)),
		str("incrby", 3, w|f, "Increments the integer value of a key by a number.", planIncr(1, true)),
		str("decrby", 3, w|f, "Decrements a number from the integer value of a key.", planIncr(-1, true)),
		str("append", 3, w|f, "Appends a string to the value of a key. Creates the key if it doesn't exist.", planAppend),
		str("strlen", 2, r|f, "Returns the length of a string value.", planInt(dmap.CodeStrLen)),
		&command{name: "mget", arity: -2, flags: r | f, firstKey: 1, lastKey: -1, step: 1, group: "string", since: "1.0.0",
			summary: "Atomically returns the string values of one or more keys.", plan: planMGet},
		&command{name: "mset", arity: -3, flags: w, firstKey: 1, lastKey: -1, step: 2, group: "string", since: "1.0.1",
			summary: "Atomically creates or modifies the string values of one or more keys.", plan: planMSet},
		&command{name: "del", arity: -2, flags: w, firstKey: 1, lastKey: -1, step: 1, group: "generic", since: "1.0.0",
			summary: "Deletes one or more keys.", plan: planSum(dmap.CodeDel)},
		&command{name: "unlink", arity: -2, flags: w | f, firstKey: 1, lastKey: -1, step: 1, group: "generic", since: "4.0.0",
			summary: "Asynchronously deletes one or more keys.", plan: planSum(dmap.CodeDel)},
		&command{name: "exists", arity: -2, flags: r | f, firstKey: 1, lastKey: -1, step: 1, group: "generic", since: "1.0.0",
			summary: "Determines whether one or more keys exist.", plan: planSum(dmap.CodeExists)},
		key("expire", -3, w|f, "Sets the expiration time of a key in seconds.", planExpire(1000, true)),
		key("pexpire", -3, w|f, "Sets the expiration time of a key in milliseconds.", planExpire(1, true)),
		key("expireat", -3, w|f, "Sets the expiration time of a key to a Unix timestamp.", planExpire(1000, false)),
		key("pexpireat", -3, w|f, "Sets the expiration time of a key to a Unix milliseconds timestamp.", planExpire(1, false)),
		key("ttl", 2, r|f, "Returns the expiration time in seconds of a key.", planTTL(1000)),
		key("pttl", 2, r|f, "Returns the expiration time in milliseconds of a key.", planTTL(1)),
		key("persist", 2, w|f, "Removes the expiration time of a key.", planInt(dmap.CodePersist)),
		key("type", 2, r|f, "Determines the type of value stored at a key.", planType),
		hash("hset", -4, w|f, "Creates or modifies the value of a field in a hash.", planHSet),
		hash("hget", 3, r|f, "Returns the value of a field in a hash.", planHGet),
		hash("hmget", -3, r|f, "Returns the values of all fields in a hash.", planHMGet),
		hash("hdel", -3, w|f, "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.", planHDel),
		hash("hgetall", 2, r, "Returns all fields and values in a hash.", planHGetAll),
		hash("hlen", 2, r|f, "Returns the number of fields in a hash.", planInt(dmap.CodeHLen)),
		hash("hincrby", 4, w|f, "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.", planHIncrBy),
	)
}

// Errors with Redis's texts.
const (
	errSyntax      = "ERR syntax error"
	errNotInteger  = "ERR value is not an integer or out of range"
	errWrongType   = "WRONGTYPE Operation against a key holding the wrong kind of value"
	errCrossSlot   = "CROSSSLOT Keys in request don't hash to the same slot"
	errNoAuth      = "NOAUTH Authentication required."
	errWrongPass   = "WRONGPASS invalid username-password pair or user is disabled."
	errInvalidTime = "ERR invalid expire time in '%s' command"
)

func one(code dmap.Code, key []byte) dmap.Op { return dmap.Op{Code: code, Key: string(key)} }

// resultErr writes r's error and reports whether there was one.
func resultErr(c *conn, r *dmap.Result) bool {
	if r.Err != nil {
		c.o.err(r.Err.Error())
		return true
	}
	return false
}

func replyBulk(c *conn, rs []dmap.Result) {
	r := &rs[0]
	switch {
	case resultErr(c, r):
	case r.Nil:
		c.o.null()
	default:
		c.o.bulk(r.Value)
	}
}

func replyInt(c *conn, rs []dmap.Result) {
	if !resultErr(c, &rs[0]) {
		c.o.int(rs[0].Int)
	}
}

func planGet(code dmap.Code) func(*conn, [][]byte) (plan, string) {
	return func(c *conn, args [][]byte) (plan, string) {
		return plan{ops: []dmap.Op{one(code, args[1])}, done: replyBulk}, ""
	}
}

func planInt(code dmap.Code) func(*conn, [][]byte) (plan, string) {
	return func(c *conn, args [][]byte) (plan, string) {
		return plan{ops: []dmap.Op{one(code, args[1])}, done: replyInt}, ""
	}
}

func parseInt(b []byte) (int64, bool) { return dmap.ParseInt(b) }

// expiry validates an expiry option's value as Redis does (after the
// options were parsed): unit ms per unit, relative or absolute; it sets
// FlagExpire (and FlagRelative) and N on o.
func expiry(o *dmap.Op, v []byte, unit int64, relative bool, cmd string) string {
	n, ok := parseInt(v)
	if !ok {
		return errNotInteger
	}
	if n <= 0 || n > math.MaxInt64/unit {
		return strings.Replace(errInvalidTime, "%s", cmd, 1)
	}
	o.N = n * unit
	o.Flags |= dmap.FlagExpire
	if relative {
		if o.N > math.MaxInt64-time.Now().UnixMilli() {
			return strings.Replace(errInvalidTime, "%s", cmd, 1)
		}
		o.Flags |= dmap.FlagRelative
	}
	return ""
}

func upper(b []byte) string { return strings.ToUpper(string(b)) }

// extOpts are SET's and GETEX's options, parsed as Redis 7.0 does: an
// option may repeat (the last expiry wins), conflicting ones are a
// syntax error, and the expiry's value is checked after every option was
// read.
type extOpts struct {
	flags  uint32
	unit   string // "EX", "PX", "EXAT", "PXAT" or ""
	expire []byte
}

func parseExt(args [][]byte, set bool) (extOpts, string) {
	var e extOpts
	const persist = 1 << 31
	for j := 0; j < len(args); j++ {
		opt := upper(args[j])
		next := j+1 < len(args)
		switch {
		case set && opt == "NX" && e.flags&dmap.FlagXX == 0:
			e.flags |= dmap.FlagNX
		case set && opt == "XX" && e.flags&dmap.FlagNX == 0:
			e.flags |= dmap.FlagXX
		case set && opt == "GET":
			e.flags |= dmap.FlagGet
		case set && opt == "KEEPTTL" && e.unit == "":
			e.flags |= dmap.FlagKeepTTL
		case !set && opt == "PERSIST" && e.unit == "":
			e.flags |= persist
		case (opt == "EX" || opt == "PX" || opt == "EXAT" || opt == "PXAT") && next &&
			e.flags&(dmap.FlagKeepTTL|persist) == 0 && (e.unit == "" || e.unit == opt):
			e.unit, e.expire = opt, args[j+1]
			j++
		default:
			return e, errSyntax
		}
	}
	if e.flags&persist != 0 {
		e.flags = e.flags&^persist | dmap.FlagPersist
	}
	return e, ""
}

// apply checks the expiry and sets it on o.
func (e extOpts) apply(o *dmap.Op, cmd string) string {
	if e.unit == "" {
		return ""
	}
	unit := int64(1000)
	if e.unit[0] == 'P' {
		unit = 1
	}
	return expiry(o, e.expire, unit, !strings.HasSuffix(e.unit, "AT"), cmd)
}

func planSet(c *conn, args [][]byte) (plan, string) {
	e, bad := parseExt(args[3:], true)
	if bad != "" {
		return plan{}, bad
	}
	o := dmap.Op{Code: dmap.CodeSet, Key: string(args[1]), Args: [][]byte{args[2]}, Flags: e.flags}
	if bad := e.apply(&o, "set"); bad != "" {
		return plan{}, bad
	}
	get := o.Flags&dmap.FlagGet != 0
	return plan{ops: []dmap.Op{o}, done: func(c *conn, rs []dmap.Result) {
		r := &rs[0]
		switch {
		case resultErr(c, r):
		case get && r.Nil:
			c.o.null()
		case get:
			c.o.bulk(r.Value)
		case r.Nil:
			c.o.null()
		default:
			c.o.ok()
		}
	}}, ""
}

func planSetNX(c *conn, args [][]byte) (plan, string) {
	o := dmap.Op{Code: dmap.CodeSet, Flags: dmap.FlagNX, Key: string(args[1]), Args: [][]byte{args[2]}}
	return plan{ops: []dmap.Op{o}, done: func(c *conn, rs []dmap.Result) {
		if !resultErr(c, &rs[0]) {
			c.o.int(rs[0].Int)
		}
	}}, ""
}

// planGetEx: Redis looks the key up (nil, WRONGTYPE) before it checks the
// expiry's value, so a GETEX with a bad expiry reads the key and answers
// the expiry's error only for a string.
func planGetEx(c *conn, args [][]byte) (plan, string) {
	e, bad := parseExt(args[2:], false)
	if bad != "" {
		return plan{}, bad
	}
	o := dmap.Op{Code: dmap.CodeGetEx, Key: string(args[1]), Flags: e.flags}
	if bad := e.apply(&o, "getex"); bad != "" {
		return plan{ops: []dmap.Op{one(dmap.CodeGet, args[1])}, done: func(c *conn, rs []dmap.Result) {
			switch r := &rs[0]; {
			case resultErr(c, r):
			case r.Nil:
				c.o.null()
			default:
				c.o.err(bad)
			}
		}}, ""
	}
	return plan{ops: []dmap.Op{o}, done: replyBulk}, ""
}

func planIncr(sign int64, withArg bool) func(*conn, [][]byte) (plan, string) {
	return func(c *conn, args [][]byte) (plan, string) {
		n := int64(1)
		if withArg {
			v, ok := parseInt(args[2])
			if !ok {
				return plan{}, errNotInteger
			}
			if sign < 0 && v == math.MinInt64 {
				return plan{}, "ERR decrement would overflow"
			}
			n = v
		}
		o := dmap.Op{Code: dmap.CodeIncrBy, Key: string(args[1]), N: sign * n}
		return plan{ops: []dmap.Op{o}, done: replyInt}, ""
	}
}

func planAppend(c *conn, args [][]byte) (plan, string) {
	o := dmap.Op{Code: dmap.CodeAppend, Key: string(args[1]), Args: [][]byte{args[2]}}
	return plan{ops: []dmap.Op{o}, done: replyInt}, ""
}

func planMGet(c *conn, args [][]byte) (plan, string) {
	ops := make([]dmap.Op, len(args)-1)
	for i := range ops {
		ops[i] = one(dmap.CodeGet, args[i+1])
	}
	return plan{ops: ops, done: func(c *conn, rs []dmap.Result) {
		for i := range rs {
			if rs[i].Err != nil && rs[i].Err != dmap.ErrWrongType {
				c.o.err(rs[i].Err.Error())
				return
			}
		}
		c.o.array(len(rs))
		for i := range rs {
			if rs[i].Nil || rs[i].Err != nil {
				c.o.null()
			} else {
				c.o.bulk(rs[i].Value)
			}
		}
	}}, ""
}

func planMSet(c *conn, args [][]byte) (plan, string) {
	if len(args)%2 != 1 {
		return plan{}, "ERR wrong number of arguments for 'mset' command"
	}
	ops := make([]dmap.Op, 0, len(args)/2)
	for i := 1; i+1 < len(args); i += 2 {
		ops = append(ops, dmap.Op{Code: dmap.CodeSet, Key: string(args[i]), Args: [][]byte{args[i+1]}})
	}
	return plan{ops: ops, done: func(c *conn, rs []dmap.Result) {
		for i := range rs {
			if resultErr(c, &rs[i]) {
				return
			}
		}
		c.o.ok()
	}}, ""
}

// planSum runs code on every key and answers the sum of the results (DEL,
// UNLINK, EXISTS).
func planSum(code dmap.Code) func(*conn, [][]byte) (plan, string) {
	return func(c *conn, args [][]byte) (plan, string) {
		ops := make([]dmap.Op, len(args)-1)
		for i := range ops {
			ops[i] = one(code, args[i+1])
		}
		return plan{ops: ops, done: func(c *conn, rs []dmap.Result) {
			var n int64
			for i := range rs {
				if resultErr(c, &rs[i]) {
					return
				}
				n += rs[i].Int
			}
			c.o.int(n)
		}}, ""
	}
}

func planExpire(unit int64, relative bool) func(*conn, [][]byte) (plan, string) {
	return func(c *conn, args [][]byte) (plan, string) {
		name := strings.ToLower(string(args[0]))
		o := dmap.Op{Code: dmap.CodeExpire, Key: string(args[1]), Flags: dmap.FlagExpire}
		for _, a := range args[3:] {
			switch upper(a) {
			case "NX":
				o.Flags |= dmap.FlagNX
			case "XX":
				o.Flags |= dmap.FlagXX
			case "GT":
				o.Flags |= dmap.FlagGT
			case "LT":
				o.Flags |= dmap.FlagLT
			default:
				return plan{}, "ERR Unsupported option " + string(a)
			}
		}
		if o.Flags&dmap.FlagNX != 0 && o.Flags&(dmap.FlagXX|dmap.FlagGT|dmap.FlagLT) != 0 {
			return plan{}, "ERR NX and XX, GT or LT options at the same time are not compatible"
		}
		if o.Flags&dmap.FlagGT != 0 && o.Flags&dmap.FlagLT != 0 {
			return plan{}, "ERR GT and LT options at the same time are not compatible"
		}
		n, ok := parseInt(args[2])
		if !ok {
			return plan{}, errNotInteger
		}
		if n > math.MaxInt64/unit || n < math.MinInt64/unit {
			return plan{}, strings.Replace(errInvalidTime, "%s", name, 1)
		}
		o.N = n * unit
		if relative {
			if o.N > math.MaxInt64-time.Now().UnixMilli() {
				return plan{}, strings.Replace(errInvalidTime, "%s", name, 1)
			}
			o.Flags |= dmap.FlagRelative
		}
		return plan{ops: []dmap.Op{o}, done: replyInt}, ""
	}
}

func planTTL(unit int64) func(*conn, [][]byte) (plan, string) {
	return func(c *conn, args [][]byte) (plan, string) {
		return plan{ops: []dmap.Op{one(dmap.CodeTTL, args[1])}, done: func(c *conn, rs []dmap.Result) {
			r := &rs[0]
			if resultErr(c, r) {
				return
			}
			if r.Int < 0 || unit == 1 {
				c.o.int(r.Int)
				return
			}
			c.o.int((r.Int + 500) / 1000)
		}}, ""
	}
}

func planType(c *conn, args [][]byte) (plan, string) {
	return plan{ops: []dmap.Op{one(dmap.CodeType, args[1])}, done: func(c *conn, rs []dmap.Result) {
		if !resultErr(c, &rs[0]) {
			c.o.simple(string(rs[0].Value))
		}
	}}, ""
}

func planHSet(c *conn, args [][]byte) (plan, string) {
	if len(args)%2 != 0 {
		return plan{}, "ERR wrong number of arguments for 'hset' command"
	}
	o := dmap.Op{Code: dmap.CodeHSet, Key: string(args[1]), Args: args[2:]}
	return plan{ops: []dmap.Op{o}, done: replyInt}, ""
}

func planHGet(c *conn, args [][]byte) (plan, string) {
	o := dmap.Op{Code: dmap.CodeHGet, Key: string(args[1]), Args: args[2:3]}
	return plan{ops: []dmap.Op{o}, done: replyBulk}, ""
}

func planHMGet(c *conn, args [][]byte) (plan, string) {
	o := dmap.Op{Code: dmap.CodeHMGet, Key: string(args[1]), Args: args[2:]}
	return plan{ops: []dmap.Op{o}, done: func(c *conn, rs []dmap.Result) {
		r := &rs[0]
		if resultErr(c, r) {
			return
		}
		c.o.array(len(r.Values))
		for _, v := range r.Values {
			if v == nil {
				c.o.null()
			} else {
				c.o.bulk(v)
			}
		}
	}}, ""
}

func planHDel(c *conn, args [][]byte) (plan, string) {
	o := dmap.Op{Code: dmap.CodeHDel, Key: string(args[1]), Args: args[2:]}
	return plan{ops: []dmap.Op{o}, done: replyInt}, ""
}

func planHGetAll(c *conn, args [][]byte) (plan, string) {
	return plan{ops: []dmap.Op{one(dmap.CodeHGetAll, args[1])}, done: func(c *conn, rs []dmap.Result) {
		r := &rs[0]
		if resultErr(c, r) {
			return
		}
		c.o.mapHeader(len(r.Values) / 2)
		for _, v := range r.Values {
			c.o.bulk(v)
		}
	}}, ""
}

func planHIncrBy(c *conn, args [][]byte) (plan, string) {
	n, ok := parseInt(args[3])
	if !ok {
		return plan{}, errNotInteger
	}
	o := dmap.Op{Code: dmap.CodeHIncrBy, Key: string(args[1]), N: n, Args: args[2:3]}
	return plan{ops: []dmap.Op{o}, done: replyInt}, ""
}
