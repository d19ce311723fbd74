package resp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/dmap"
)

func init() {
	cn := func(name string, arity, flags int, summary, since string, run func(*conn, [][]byte)) *command {
		return &command{name: name, arity: arity, flags: flags, group: "connection", summary: summary, since: since, run: run}
	}
	srv := func(name string, arity, flags int, summary, since string, run func(*conn, [][]byte)) *command {
		return &command{name: name, arity: arity, flags: flags, group: "server", summary: summary, since: since, run: run}
	}
	const na, ps, f = flagNoAuth, flagPubSubOK, flagFast
	register(
		cn("ping", -1, f|ps, "Returns the server's liveliness response.", "1.0.0", cmdPing),
		cn("echo", 2, f, "Returns the given string.", "1.0.0", func(c *conn, a [][]byte) { c.o.bulk(a[1]) }),
		cn("quit", -1, na|f|ps, "Closes the connection.", "1.0.0", func(c *conn, a [][]byte) { c.o.ok(); c.quit = true }),
		cn("reset", 1, na|f|ps, "Resets the connection.", "6.2.0", cmdReset),
		cn("select", 2, f, "Changes the selected database.", "1.0.0", cmdSelect),
		cn("auth", -2, na|f, "Authenticates the connection.", "1.0.0", cmdAuth),
		cn("hello", -1, na|f, "Handshakes with the Redis server.", "6.0.0", cmdHello),
		cn("client", -2, 0, "A container for client connection commands.", "2.4.0", cmdClient),
		cn("readonly", 1, f, "Enables read-only queries for a connection to a Redis Cluster replica node.", "3.0.0", cmdClusterMode),
		cn("readwrite", 1, f, "Enables read-write queries for a connection to a Reids Cluster replica node.", "3.0.0", cmdClusterMode),
		srv("command", -1, 0, "Returns detailed information about all commands.", "2.8.13", cmdCommand),
		srv("info", -1, 0, "Returns information and statistics about the server.", "1.0.0", cmdInfo),
		srv("dbsize", 1, f, "Returns the number of keys in the database.", "1.0.0", cmdDBSize),
		srv("flushdb", -1, flagWrite|flagAdmin, "Removes all keys from the current database.", "1.0.0", cmdFlush),
		srv("flushall", -1, flagWrite|flagAdmin, "Removes all keys from all databases.", "1.0.0", cmdFlush),
		srv("config", -2, 0, "A container for server configuration commands.", "2.0.0", cmdConfig),
		&command{name: "scan", arity: -2, flags: flagRead, group: "generic", since: "2.8.0",
			summary: "Iterates over the key names in the database.", run: cmdScan},
	)
}

func cmdPing(c *conn, a [][]byte) {
	if len(a) > 2 {
		c.o.err("ERR wrong number of arguments for 'ping' command")
		return
	}
	if c.sub.count() > 0 && !c.o.resp3 {
		c.o.array(2)
		c.o.bulkString("pong")
		if len(a) == 2 {
			c.o.bulk(a[1])
		} else {
			c.o.bulkString("")
		}
		return
	}
	if len(a) == 2 {
		c.o.bulk(a[1])
		return
	}
	c.o.simple("PONG")
}

func cmdSelect(c *conn, a [][]byte) {
	n, ok := parseInt(a[1])
	switch {
	case !ok:
		c.o.err(errNotInteger)
	case c.redirects() && n != 0:
		c.o.err("ERR SELECT is not allowed in cluster mode")
	case n != 0:
		c.o.err("ERR DB index is out of range")
	default:
		c.o.ok()
	}
}

func cmdReset(c *conn, _ [][]byte) {
	c.multi = nil
	c.tr.off(c)
	c.s.ps.drop(c)
	c.setProto(false)
	c.clusterMode = false
	if !c.s.cfg.Anonymous {
		c.user = nil
	}
	c.mu.Lock()
	c.name = ""
	c.mu.Unlock()
	c.o.simple("RESET")
}

func cmdClusterMode(c *conn, _ [][]byte) {
	c.clusterMode = true
	c.o.ok()
}

// authenticate checks credentials: a token alone, or a user and a
// password (or one of the user's tokens). It returns an error reply, or "".
func (c *conn) authenticate(user, secret string, hasUser bool) string {
	a := c.s.cfg.Auth
	if a == nil {
		return "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
	}
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.Timeout)
	defer cancel()
	var p Principal
	var err error
	if hasUser {
		p, err = a.Password(ctx, user, secret)
		if errors.Is(err, ErrBadCredentials) {
			if tp, terr := a.Token(ctx, secret); terr == nil && tp.Name == user {
				p, err = tp, nil
			}
		}
	} else {
		p, err = a.Token(ctx, secret)
	}
	switch {
	case errors.Is(err, ErrBadCredentials):
		return errWrongPass
	case errors.Is(err, ErrAuthBusy):
		return "ERR authentication is busy, try again later"
	case err != nil:
		return "ERR authentication failed: " + err.Error()
	}
	c.user = &p
	return ""
}

func cmdAuth(c *conn, a [][]byte) {
	if len(a) > 3 {
		c.o.err(errSyntax)
		return
	}
	var e string
	if len(a) == 3 {
		e = c.authenticate(string(a[1]), string(a[2]), true)
	} else {
		e = c.authenticate("", string(a[1]), false)
	}
	if e != "" {
		c.o.err(e)
		return
	}
	c.o.ok()
}

func cmdHello(c *conn, a [][]byte) {
	proto := 0
	if len(a) > 1 {
		n, ok := parseInt(a[1])
		if !ok {
			c.o.err("ERR Protocol version is not an integer or out of range")
			return
		}
		if n < 2 || n > 3 {
			c.o.err("NOPROTO unsupported protocol version")
			return
		}
		proto = int(n)
	}
	var name []byte
	setName := false
	for i := 2; i < len(a); i++ {
		switch opt := upper(a[i]); {
		case opt == "AUTH" && i+2 < len(a):
			if e := c.authenticate(string(a[i+1]), string(a[i+2]), true); e != "" {
				c.o.err(e)
				return
			}
			i += 2
		case opt == "SETNAME" && i+1 < len(a):
			name, setName = a[i+1], true
			i++
		default:
			c.o.err("ERR Syntax error in HELLO option '" + string(a[i]) + "'")
			return
		}
	}
	if c.user == nil && !c.s.cfg.Anonymous {
		c.o.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return
	}
	if setName {
		if !validName(name) {
			c.o.err("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		c.mu.Lock()
		c.name = string(name)
		c.mu.Unlock()
	}
	if proto != 0 {
		c.setProto(proto == 3)
	}
	mode := "standalone"
	if c.redirects() {
		mode = "cluster"
	}
	c.o.mapHeader(7)
	c.o.bulkString("server")
	c.o.bulkString("redis")
	c.o.bulkString("version")
	c.o.bulkString(redisVersion)
	c.o.bulkString("proto")
	if c.o.resp3 {
		c.o.int(3)
	} else {
		c.o.int(2)
	}
	c.o.bulkString("id")
	c.o.int(c.id)
	c.o.bulkString("mode")
	c.o.bulkString(mode)
	c.o.bulkString("role")
	c.o.bulkString("master")
	c.o.bulkString("modules")
	c.o.array(0)
}

// redisVersion is the Redis version shoal answers as (HELLO, INFO): the
// commands and replies are those of Redis 7.0.
const redisVersion = "7.0.0"

func validName(b []byte) bool {
	for _, ch := range b {
		if ch < '!' || ch > '~' {
			return false
		}
	}
	return true
}

func cmdClient(c *conn, a [][]byte) {
	sub := upper(a[1])
	switch {
	case sub == "ID" && len(a) == 2:
		c.o.int(c.id)
	case sub == "SETNAME" && len(a) == 3:
		if !validName(a[2]) {
			c.o.err("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		c.mu.Lock()
		c.name = string(a[2])
		c.mu.Unlock()
		c.o.ok()
	case sub == "GETNAME" && len(a) == 2:
		c.mu.Lock()
		name := c.name
		c.mu.Unlock()
		if name == "" {
			c.o.null()
		} else {
			c.o.bulkString(name)
		}
	case sub == "INFO" && len(a) == 2:
		c.snapshot()
		c.o.verbatim(c.info(time.Now()))
	case sub == "LIST":
		var b strings.Builder
		now := time.Now()
		cs := c.s.clients()
		slices.SortFunc(cs, func(x, y *conn) int { return int(x.id - y.id) })
		if len(a) > 2 {
			if upper(a[2]) != "TYPE" || len(a) != 4 {
				c.o.err(errSyntax)
				return
			}
			if t := strings.ToLower(string(a[3])); t != "normal" && t != "pubsub" {
				if t != "master" && t != "replica" && t != "slave" {
					c.o.err("ERR Unknown client type '" + string(a[3]) + "'")
					return
				}
				cs = nil
			} else {
				cs = slices.DeleteFunc(cs, func(x *conn) bool { return (x.sub.count() > 0) != (t == "pubsub") })
			}
		}
		c.snapshot()
		for _, x := range cs {
			b.WriteString(x.info(now))
		}
		c.o.verbatim(b.String())
	case sub == "SETINFO" && len(a) == 4:
		attr := upper(a[2])
		if (attr != "LIB-NAME" && attr != "LIB-VER") || !validName(a[3]) {
			c.o.err("ERR Unrecognized option '" + string(a[2]) + "'")
			return
		}
		c.mu.Lock()
		if attr == "LIB-NAME" {
			c.libName = string(a[3])
		} else {
			c.libVer = string(a[3])
		}
		c.mu.Unlock()
		c.o.ok()
	case sub == "TRACKING":
		c.tr.command(c, a)
	case sub == "CACHING" && len(a) == 3:
		c.tr.caching(c, a[2])
	case sub == "GETREDIR" && len(a) == 2:
		c.o.int(c.tr.getRedir())
	case sub == "TRACKINGINFO" && len(a) == 2:
		c.tr.info(c)
	case sub == "HELP":
		c.o.strings([]string{"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"ID", "    Return the ID of the current connection.",
			"GETNAME", "    Return the name of the current connection.",
			"SETNAME <name>", "    Assign the name <name> to the current connection.",
			"INFO", "    Return information about the current client connection.",
			"LIST [TYPE (NORMAL|PUBSUB)]", "    Return information about client connections.",
			"SETINFO <LIB-NAME|LIB-VER> <value>", "    Set client library name or version.",
			"TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]] [OPTIN] [OPTOUT] [NOLOOP]",
			"    Control server assisted client side caching.",
			"CACHING (YES|NO)", "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
			"GETREDIR", "    Return the client ID we are redirecting to when tracking is enabled.",
			"TRACKINGINFO", "    Return information about the current client's tracking state.",
			"HELP", "    Print this help."})
	default:
		c.o.err(unknownSub(a, "CLIENT"))
	}
}

func unknownSub(a [][]byte, cmd string) string {
	return "ERR unknown subcommand or wrong number of arguments for '" + trunc(string(a[1]), 128) + "'. Try " + cmd + " HELP."
}

// info is the connection's line in CLIENT LIST.
func (c *conn) info(now time.Time) string {
	c.mu.Lock()
	name, last, at, lib, ver, snap := c.name, c.lastCmd, c.lastAt, c.libName, c.libVer, c.snap
	c.mu.Unlock()
	flags := "N"
	if c.sub.count() > 0 {
		flags = "P"
	}
	if snap.tracking {
		flags += "t"
	}
	resp := 2
	if snap.resp3 {
		resp = 3
	}
	if last == "" {
		last = "NULL"
	}
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=-1 name=%s age=%d idle=%d flags=%s db=0 sub=%d psub=%d ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=%s user=%s redir=%d resp=%d lib-name=%s lib-ver=%s\n",
		c.id, c.addr, c.laddr, name, int(now.Sub(c.created).Seconds()), int(now.Sub(at).Seconds()), flags,
		c.sub.channels(), c.sub.patterns(), last, snap.user, snap.redir, resp, lib, ver)
}

func cmdConfig(c *conn, a [][]byte) {
	switch upper(a[1]) {
	case "GET":
		// No Redis configuration parameter applies to shoal: every
		// pattern matches nothing (redis-benchmark asks for "save" and
		// "appendonly" and goes on without them).
		c.o.mapHeader(0)
	case "RESETSTAT":
		c.s.stats.reset()
		c.o.ok()
	default:
		c.o.err(unknownSub(a, "CONFIG"))
	}
}

func (c *conn) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.s.ctx, c.s.cfg.Timeout)
}

func allPartitions(n int) []int {
	ps := make([]int, n)
	for i := range ps {
		ps[i] = i
	}
	return ps
}

func cmdDBSize(c *conn, _ [][]byte) {
	ctx, cancel := c.ctx()
	defer cancel()
	rs, err := c.s.m.DoEach(ctx, allPartitions(c.s.m.Partitions()), dmap.Op{Code: dmap.CodeSize})
	if err != nil {
		c.o.err(errorText(err))
		return
	}
	var n int64
	for _, r := range rs {
		n += r.Int
	}
	c.o.int(n)
}

func cmdFlush(c *conn, a [][]byte) {
	if len(a) > 2 || len(a) == 2 && upper(a[1]) != "ASYNC" && upper(a[1]) != "SYNC" {
		c.o.err(errSyntax)
		return
	}
	ctx, cancel := c.ctx()
	defer cancel()
	rs, err := c.s.m.DoEach(ctx, allPartitions(c.s.m.Partitions()), dmap.Op{Code: dmap.CodeFlush})
	if err != nil {
		c.o.err(errorText(err))
		return
	}
	for i := range rs {
		if resultErr(c, &rs[i]) {
			return
		}
	}
	c.o.ok()
}

func cmdScan(c *conn, a [][]byte) {
	cur, err := strconv.ParseUint(string(a[1]), 10, 64)
	if err != nil {
		c.o.err("ERR invalid cursor")
		return
	}
	var opt dmap.ScanOptions
	for i := 2; i < len(a); i++ {
		if i+1 >= len(a) {
			c.o.err(errSyntax)
			return
		}
		switch upper(a[i]) {
		case "COUNT":
			n, ok := parseInt(a[i+1])
			if !ok {
				c.o.err(errNotInteger)
				return
			}
			if n < 1 {
				c.o.err(errSyntax)
				return
			}
			opt.Count = int(min(n, 1<<20))
		case "MATCH":
			opt.Match = string(a[i+1])
			if opt.Match == "*" {
				opt.Match = ""
			}
		case "TYPE":
			opt.Type = strings.ToLower(string(a[i+1]))
		default:
			c.o.err(errSyntax)
			return
		}
		i++
	}
	if cur>>54 >= uint64(c.s.m.Partitions()) {
		// A cursor this server never gave: Redis starts over as well.
		cur = 0
	}
	ctx, cancel := c.ctx()
	defer cancel()
	keys, next, err := c.s.m.Scan(ctx, cur, opt)
	if err != nil {
		c.o.err(errorText(err))
		return
	}
	c.o.array(2)
	c.o.bulkString(strconv.FormatUint(next, 10))
	c.o.strings(keys)
}
