package resp_test

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var record = flag.Bool("record", false, "write the differential test's expectations from a real redis-server")

const goldenFile = "testdata/differential.jsonl"

// step is one step of a differential sequence: a pipeline of commands,
// or a whole SCAN (keys compared as a set). Want holds the replies a
// real redis-server gave.
type step struct {
	Cmds [][]string `json:"cmds,omitempty"`
	Scan bool       `json:"scan,omitempty"`
	Want []string   `json:"want"`
	// Proto3 marks the first step of a RESP3 sequence (HELLO 3 first).
	Proto3 bool `json:"proto3,omitempty"`
	// Node is the shoal node the pipeline goes to.
	Node int `json:"node"`
}

// gen makes random commands over a few keys of both types, with valid
// and invalid arguments, deadlines far in the future or in the past (so
// nothing expires while a sequence runs).
type gen struct{ r *rand.Rand }

var (
	strKeys  = []string{"k1", "k2", "k3", "{t}a", "{t}b", "m:k1", "m:k2"}
	hashKeys = []string{"h1", "h2", "{t}h"}
	fields   = []string{"f1", "f2", "f3"}
	values   = []string{"v", "", "abc", "12", "-5", "0", "9223372036854775807", "-9223372036854775808", "3.5", "x y"}
	numbers  = []string{"1", "5", "-3", "0", "100", "x", "9223372036854775807", "-9223372036854775808", "1.5", ""}
)

const (
	future   = "4102444800"    // 2100-01-01, seconds
	futureMs = "4102444800000" // in milliseconds
	past     = "1000000000"    // 2001
)

func (g gen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }

func (g gen) pickc(xs [][]string) []string { return slices.Clone(xs[g.r.IntN(len(xs))]) }

func (g gen) key() string {
	if g.r.IntN(4) == 0 {
		return g.pick(hashKeys)
	}
	return g.pick(strKeys)
}

func (g gen) keys(n int) []string {
	out := make([]string, 1+g.r.IntN(n))
	for i := range out {
		out[i] = g.key()
	}
	return out
}

func (g gen) command() []string {
	k := g.key()
	switch g.r.IntN(44) {
	case 0, 1:
		return []string{"GET", k}
	case 2, 3, 4:
		c := []string{"SET", k, g.pick(values)}
		for range g.r.IntN(3) {
			c = append(c, g.pickc([][]string{{"NX"}, {"XX"}, {"GET"}, {"EX", "1000"}, {"PX", "100000"}, {"KEEPTTL"},
				{"EXAT", future}, {"PXAT", futureMs}, {"EX", "0"}, {"EX", "abc"}, {"PX", "-1"}, {"BOGUS"}})...)
		}
		return c
	case 5:
		return []string{"SETNX", k, g.pick(values)}
	case 6:
		return []string{"GETDEL", k}
	case 7:
		c := []string{"GETEX", k}
		return append(c, [][]string{{}, {"EX", "1000"}, {"PERSIST"}, {"PXAT", futureMs}, {"EX", "-1"}, {"PERSIST", "EX", "5"}}[g.r.IntN(6)]...)
	case 8:
		return append([]string{"MGET"}, g.keys(4)...)
	case 9:
		c := []string{"MSET"}
		for _, key := range g.keys(3) {
			c = append(c, key, g.pick(values))
		}
		if g.r.IntN(8) == 0 {
			c = c[:len(c)-1]
		}
		return c
	case 10:
		return append([]string{"DEL"}, g.keys(3)...)
	case 11:
		return append([]string{"UNLINK"}, g.keys(2)...)
	case 12:
		return append([]string{"EXISTS"}, g.keys(3)...)
	case 13, 14:
		return []string{"INCR", k}
	case 15:
		return []string{"INCRBY", k, g.pick(numbers)}
	case 16:
		return []string{"DECR", k}
	case 17:
		return []string{"DECRBY", k, g.pick(numbers)}
	case 18:
		return []string{"APPEND", k, g.pick(values)}
	case 19:
		return []string{"STRLEN", k}
	case 20:
		c := []string{"EXPIRE", k, g.pick([]string{"1000", "2000", "-1", "x", "500"})}
		if g.r.IntN(2) == 0 {
			c = append(c, g.pick([]string{"NX", "XX", "GT", "LT", "BOGUS"}))
		}
		if g.r.IntN(6) == 0 {
			c = append(c, g.pick([]string{"NX", "XX", "GT", "LT"}))
		}
		return c
	case 21:
		return []string{"PEXPIRE", k, g.pick([]string{"1000000", "-5", "3000000"})}
	case 22:
		return []string{"EXPIREAT", k, g.pick([]string{future, past})}
	case 23, 24:
		return []string{g.pick([]string{"TTL", "PTTL"}), k}
	case 25:
		return []string{"PERSIST", k}
	case 26:
		return []string{"TYPE", k}
	case 27, 28:
		c := []string{"HSET", k}
		for range 1 + g.r.IntN(2) {
			c = append(c, g.pick(fields), g.pick(values))
		}
		if g.r.IntN(8) == 0 {
			c = c[:len(c)-1]
		}
		return c
	case 29:
		return []string{"HGET", k, g.pick(fields)}
	case 30:
		return []string{"HMGET", k, g.pick(fields), g.pick(fields)}
	case 31:
		return []string{"HDEL", k, g.pick(fields)}
	case 32:
		return []string{"HGETALL", k}
	case 33:
		return []string{"HLEN", k}
	case 34:
		return []string{"HINCRBY", k, g.pick(fields), g.pick(numbers)}
	case 35:
		return []string{"ECHO", g.pick(values)}
	case 36:
		return append([]string{"PING"}, g.pickc([][]string{{}, {"hi"}, {"a", "b"}})...)
	case 37:
		return []string{"SELECT", g.pick([]string{"0", "x", "0"})}
	case 38:
		return []string{"DBSIZE"}
	case 39:
		return g.pickc([][]string{{"FOO", "bar"}, {"GET"}, {"SET", "k1"}, {"HSET", "h1", "f"}, {"foo"}, {"INCRBY", "k1"}, {"TTL"}})
	case 40:
		return []string{"STRLEN", k}
	case 41:
		return []string{"MGET", "k1", "{t}a", "h1"}
	case 42:
		return []string{"SET", k, g.pick(values), "GET"}
	default:
		return []string{"EXISTS", k}
	}
}

// sequence makes a random sequence of pipelines.
func sequence(seed uint64, n int, proto3 bool) []step {
	g := gen{rand.New(rand.NewPCG(seed, seed*7+1))}
	var out []step
	for i := 0; i < n; i++ {
		st := step{Node: g.r.IntN(3)}
		if i == 0 {
			st.Proto3 = proto3
		}
		if g.r.IntN(15) == 0 {
			st.Scan = true
		} else if g.r.IntN(12) == 0 {
			// A transaction: queued commands (some refused), then EXEC
			// or DISCARD.
			st.Cmds = append(st.Cmds, []string{"MULTI"})
			for range 1 + g.r.IntN(3) {
				cmd := g.command()
				for cmd[0] == "TTL" || cmd[0] == "PTTL" { // counted down: compared only on their own
					cmd = g.command()
				}
				st.Cmds = append(st.Cmds, cmd)
			}
			st.Cmds = append(st.Cmds, g.pickc([][]string{{"EXEC"}, {"EXEC"}, {"EXEC"}, {"DISCARD"}}))
		} else {
			for range 1 + g.r.IntN(4)*g.r.IntN(2) {
				st.Cmds = append(st.Cmds, g.command())
			}
		}
		out = append(out, st)
	}
	return out
}

// target runs steps against one server: redis-server (one connection)
// or shoal (a connection per node).
type target struct {
	conns []*client
}

func (tg *target) conn(node int) *client { return tg.conns[node%len(tg.conns)] }

func (tg *target) run(t *testing.T, st step) []string {
	c := tg.conn(st.Node)
	if st.Scan {
		var keys []string
		cur := "0"
		for {
			r := c.do(t, "SCAN", cur, "COUNT", "7")
			cur, keys = parseScan(t, r, keys)
			if cur == "0" {
				break
			}
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		return []string{strings.Join(keys, ",")}
	}
	c.send(t, st.Cmds...)
	out := make([]string, len(st.Cmds))
	for i := range out {
		out[i] = c.read(t)
	}
	return out
}

// parseScan reads a SCAN reply's cursor and adds its keys.
func parseScan(t *testing.T, r string, keys []string) (string, []string) {
	// *[$"cursor" *[$"k1" $"k2"]]
	if !strings.HasPrefix(r, "*[$") {
		t.Fatalf("SCAN: %s", r)
	}
	rest := r[3:]
	end := strings.Index(rest, " ")
	cur, err := strconv.Unquote(rest[:end])
	if err != nil {
		t.Fatalf("SCAN cursor in %s: %v", r, err)
	}
	list := strings.TrimSuffix(strings.TrimPrefix(rest[end+1:], "*["), "]]")
	for _, f := range strings.Fields(list) {
		k, err := strconv.Unquote(strings.TrimPrefix(f, "$"))
		if err != nil {
			t.Fatalf("SCAN key %q: %v", f, err)
		}
		keys = append(keys, k)
	}
	return cur, keys
}

// same compares a reply with the expectation, allowing what a run at
// another moment changes: a TTL counted down (live: within a minute, the
// time between the two runs of a sequence on a loaded machine; replayed
// from a recording: any positive count).
func same(cmd []string, want, got string, live bool) bool {
	if want == got {
		return true
	}
	name := strings.ToUpper(cmd[0])
	if (name == "TTL" || name == "PTTL") && strings.HasPrefix(want, ":") && strings.HasPrefix(got, ":") {
		w, err1 := strconv.ParseInt(want[1:], 10, 64)
		g, err2 := strconv.ParseInt(got[1:], 10, 64)
		if err1 != nil || err2 != nil || (w < 0) != (g < 0) || w < 0 {
			return false
		}
		if !live {
			return true
		}
		tol := int64(60)
		if name == "PTTL" {
			tol = 60000
		}
		return w-g <= tol && g-w <= tol
	}
	return false
}

func reset(t *testing.T, tg *target, proto3 bool, shoal bool) {
	for _, c := range tg.conns {
		if shoal {
			c.auth(t)
		}
		p := "2"
		if proto3 {
			p = "3"
		}
		if r := c.do(t, "HELLO", p); !strings.HasPrefix(r, "*[") && !strings.HasPrefix(r, "%{") {
			t.Fatalf("HELLO %s: %s", p, r)
		}
	}
	if r := tg.conns[0].do(t, "FLUSHALL"); r != "+OK" {
		t.Fatalf("FLUSHALL: %s", r)
	}
}

// Random sequences of commands get the same replies from a 3-node shoal
// cluster (each pipeline through a random node) as from a real
// redis-server, or, without one, as the recorded replies of one.
func TestDifferentialAgainstRedis(t *testing.T) {
	var seqs [][]step
	redisAddr := redisServer(t)
	live := redisAddr != ""
	if live {
		for seed := range uint64(6) {
			seqs = append(seqs, sequence(seed+1, 250, seed%2 == 1))
		}
	} else {
		seqs = loadGolden(t)
		t.Logf("no redis-server on the PATH: replaying %d recorded sequences", len(seqs))
	}
	sc := startShoal(t, 3, nil)
	if live {
		for _, seq := range seqs {
			rc := &target{conns: []*client{dial(t, redisAddr)}}
			reset(t, rc, seq[0].Proto3, false)
			for i := range seq {
				seq[i].Want = rc.run(t, seq[i])
			}
			rc.conns[0].close()
		}
		if *record {
			saveGolden(t, seqs)
		}
	}
	mismatches := 0
	for n, seq := range seqs {
		sh := &target{}
		for _, a := range sc.addrs {
			sh.conns = append(sh.conns, dial(t, a))
		}
		reset(t, sh, seq[0].Proto3, true)
		for i, st := range seq {
			got := sh.run(t, st)
			for j := range got {
				cmd := []string{"SCAN"}
				if !st.Scan {
					cmd = st.Cmds[j]
				}
				if !same(cmd, st.Want[j], got[j], live) {
					mismatches++
					t.Errorf("sequence %d step %d (node %d): %q\n  redis: %s\n  shoal: %s", n+1, i, st.Node+1, cmd, st.Want[j], got[j])
					if mismatches > 20 {
						t.FailNow()
					}
				}
			}
		}
		for _, c := range sh.conns {
			c.close()
		}
	}
}

func saveGolden(t *testing.T, seqs [][]step) {
	f, err := os.Create(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, `{"comment": "replies of redis-server `+redisVersion(t)+` to the sequences of TestDifferentialAgainstRedis; regenerate with go test ./resp -run Differential -record"}`)
	for _, seq := range seqs {
		b, _ := json.Marshal(seq)
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

func redisVersion(t *testing.T) string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	for _, x := range f {
		if strings.HasPrefix(x, "v=") {
			return x[2:]
		}
	}
	return strings.TrimSpace(string(out))
}

func loadGolden(t *testing.T) [][]step {
	f, err := os.Open(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seqs [][]step
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), `{"comment"`) {
			continue
		}
		var seq []step
		if err := json.Unmarshal(sc.Bytes(), &seq); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seqs) == 0 {
		t.Fatal("no recorded sequences")
	}
	return seqs
}
