package resp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-dev/shoal/dmap"
	"github.com/shoal-dev/shoal/internal/server"
	"github.com/shoal-dev/shoal/resp"
)

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// clientTimeout bounds each command of the go-redis clients: their
// default (3 s to read a reply) is short for a loaded machine, and
// go-redis retries a command whose reply timed out, which is wrong for
// INCRBY.
const clientTimeout = 30 * time.Second

func (sc *shoalCluster) remoteCalls() uint64 {
	var n uint64
	for _, s := range sc.nodes {
		n += s.Maps().Stats().RemoteCalls
	}
	return n
}

// keyOwnedBy finds a key whose slot's owner is node i (0-based).
func (sc *shoalCluster) keyOwnedBy(i int, prefix string) string {
	m := sc.nodes[0].Maps()
	name := sc.nodes[i].Node().Name()
	for n := 0; ; n++ {
		k := fmt.Sprintf("%s%d", prefix, n)
		if m.Owner(dmap.PartitionOf(k, m.Partitions())) == name {
			return k
		}
	}
}

// go-redis, plain and cluster-aware, against one cluster; the raw
// protocol's redirections and authentication.
func TestClients(t *testing.T) {
	sc := startShoal(t, 3, nil)

	t.Run("auth", func(t *testing.T) {
		c := dial(t, sc.addrs[0])
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"GET", "a"}, "-NOAUTH Authentication required."},
			{[]string{"PING"}, "-NOAUTH Authentication required."},
			{[]string{"AUTH", "admin", "wrong"}, "-WRONGPASS invalid username-password pair or user is disabled."},
			{[]string{"AUTH", "nobody", adminPass}, "-WRONGPASS invalid username-password pair or user is disabled."},
			{[]string{"AUTH", "not-a-token"}, "-WRONGPASS invalid username-password pair or user is disabled."},
			{[]string{"AUTH", sc.token}, "+OK"},
			{[]string{"PING"}, "+PONG"},
			{[]string{"AUTH", "admin", sc.token}, "+OK"},
		} {
			if got := c.do(t, tc.args...); got != tc.want {
				t.Errorf("%q: %s, want %s", tc.args, got, tc.want)
			}
		}
	})

	t.Run("go-redis plain", func(t *testing.T) {
		ctx := tctx(t)
		rdb := redis.NewClient(&redis.Options{Addr: sc.addrs[1], Username: "admin", Password: adminPass,
			DialTimeout: clientTimeout, ReadTimeout: clientTimeout, WriteTimeout: clientTimeout})
		defer rdb.Close()
		if err := rdb.Set(ctx, "plain:a", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := rdb.IncrBy(ctx, "plain:a", 41).Result(); err != nil || n != 42 {
			t.Fatalf("INCRBY: %d %v", n, err)
		}
		rdb.HSet(ctx, "plain:h", "x", "1", "y", "2")
		if m, err := rdb.HGetAll(ctx, "plain:h").Result(); err != nil || m["x"] != "1" || m["y"] != "2" {
			t.Fatalf("HGETALL: %v %v", m, err)
		}
		// A pipeline of keys owned everywhere, served by forwarding.
		pipe := rdb.Pipeline()
		for i := range 200 {
			pipe.Set(ctx, fmt.Sprintf("p%d", i), i, time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		keys := make([]string, 200)
		for i := range keys {
			keys[i] = fmt.Sprintf("p%d", i)
		}
		vs, err := rdb.MGet(ctx, keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vs {
			if v != strconv.Itoa(i) {
				t.Fatalf("MGET p%d = %v", i, v)
			}
		}
		if ttl, err := rdb.TTL(ctx, "p7").Result(); err != nil || ttl < 59*time.Minute || ttl > time.Hour {
			t.Fatalf("TTL: %v %v", ttl, err)
		}
		if err := rdb.Get(ctx, "plain:none").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET of a missing key: %v", err)
		}
	})

	t.Run("go-redis cluster", func(t *testing.T) {
		ctx := tctx(t)
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: sc.addrs, Username: "admin", Password: adminPass,
			DialTimeout: clientTimeout, ReadTimeout: clientTimeout, WriteTimeout: clientTimeout})
		defer rdb.Close()
		before := sc.remoteCalls()
		const n = 300
		for i := range n {
			if err := rdb.Set(ctx, fmt.Sprintf("c%d", i), i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			if v, err := rdb.Get(ctx, fmt.Sprintf("c%d", i)).Result(); err != nil || v != strconv.Itoa(i) {
				t.Fatalf("GET c%d: %q %v", i, v, err)
			}
		}
		// Each command went to its key's owner: (almost) nothing was
		// forwarded (a table change on a loaded machine may move a few).
		if fwd := sc.remoteCalls() - before; fwd > n/20 {
			t.Fatalf("%d of %d commands were forwarded: the cluster client did not reach the owners", fwd, 2*n)
		}
		// Keys of one hash tag: multi-key commands in one slot.
		if err := rdb.MSet(ctx, "{u}a", "1", "{u}b", "2").Err(); err != nil {
			t.Fatal(err)
		}
		if vs, err := rdb.MGet(ctx, "{u}a", "{u}b").Result(); err != nil || vs[0] != "1" || vs[1] != "2" {
			t.Fatalf("MGET: %v %v", vs, err)
		}
	})

	t.Run("malformed", func(t *testing.T) {
		for _, in := range []string{"*abc\r\n", "*2\r\n$3\r\nGET\r\n:1\r\n", "*1\r\n$-5\r\n", "\"unbalanced\r\n", "*1\r\n$3\r\nGETX\r\n"} {
			c := dial(t, sc.addrs[0])
			c.send(t)
			c.nc.Write([]byte(in))
			r := c.read(t)
			if !strings.HasPrefix(r, "-ERR") {
				t.Errorf("%q: %s, want an error", in, r)
			}
			c.close()
		}
		// The node still serves.
		c := dial(t, sc.addrs[0])
		c.auth(t)
		if r := c.do(t, "PING"); r != "+PONG" {
			t.Fatalf("PING after malformed input: %s", r)
		}
	})

	t.Run("stats", func(t *testing.T) {
		c := dial(t, sc.addrs[0])
		c.auth(t)
		for range 3 {
			c.do(t, "SET", "stat", "1")
		}
		c.do(t, "INCR", "plain:h") // WRONGTYPE: a failed call
		info := c.do(t, "INFO", "commandstats")
		if !strings.Contains(info, "cmdstat_set:calls=") || !strings.Contains(info, "cmdstat_incr:calls=1,") || !strings.Contains(info, "failed_calls=1") {
			t.Fatalf("INFO commandstats: %s", info)
		}
		res, err := http.Get("http://" + sc.nodes[0].HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		for _, want := range []string{`shoal_resp_commands_total{command="set",node="node1"}`, `shoal_resp_command_errors_total{command="incr",node="node1"} 1`,
			`shoal_resp_command_seconds_bucket{command="set",node="node1",le="0.001"}`, `shoal_maps_keys{node="node1"}`} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("redirections", func(t *testing.T) {
		c := dial(t, sc.addrs[0])
		c.auth(t)
		remote := sc.keyOwnedBy(1, "r")
		// Not in cluster mode: served by forwarding, multi-slot works.
		if got := c.do(t, "SET", remote, "v"); got != "+OK" {
			t.Fatalf("forwarded SET: %s", got)
		}
		if got := c.do(t, "MGET", remote, "other"); got != `*[$"v" nil]` {
			t.Fatalf("MGET across slots, plain: %s", got)
		}
		// In cluster mode after CLUSTER SLOTS: MOVED and CROSSSLOT.
		if got := c.do(t, "CLUSTER", "SLOTS"); !strings.HasPrefix(got, "*[*[:0 ") {
			t.Fatalf("CLUSTER SLOTS: %.200s", got)
		}
		slot := dmap.Slot(remote)
		if got, want := c.do(t, "GET", remote), "-MOVED "+strconv.Itoa(slot)+" "+sc.addrs[1]; got != want {
			t.Fatalf("GET of another node's key in cluster mode: %s, want %s", got, want)
		}
		if got := c.do(t, "MGET", "a", "b"); got != "-CROSSSLOT Keys in request don't hash to the same slot" {
			t.Fatalf("MGET across slots in cluster mode: %s", got)
		}
		if got := c.do(t, "CLUSTER", "KEYSLOT", "{user1000}.following"); got != ":3443" {
			t.Fatalf("KEYSLOT: %s", got)
		}
		if got := c.do(t, "CLUSTER", "KEYSLOT", "somekey"); got != ":11058" {
			t.Fatalf("KEYSLOT: %s", got)
		}
		if got := c.do(t, "CLUSTER", "INFO"); !strings.Contains(got, "cluster_state:ok") || !strings.Contains(got, "cluster_known_nodes:3") {
			t.Fatalf("CLUSTER INFO: %s", got)
		}
		nodes := c.do(t, "CLUSTER", "NODES")
		if strings.Count(nodes, "master") != 3 || !strings.Contains(nodes, "myself,master") {
			t.Fatalf("CLUSTER NODES: %s", nodes)
		}
	})
}

// With --resp-redirect always, every connection is redirected, as by a
// Redis Cluster node: go-redis's ClusterClient and redis-cli -c follow
// MOVED to the owners.
func TestRedirectAlways(t *testing.T) {
	sc := startShoal(t, 3, func(i int, c *server.Config) { c.RESP.Redirect = resp.RedirectAlways })
	ctx := tctx(t)
	c := dial(t, sc.addrs[0])
	c.auth(t)
	remote := sc.keyOwnedBy(2, "x")
	if got := c.do(t, "SET", remote, "1"); !strings.HasPrefix(got, "-MOVED ") || !strings.HasSuffix(got, sc.addrs[2]) {
		t.Fatalf("SET of node 3's key at node 1: %s", got)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: sc.addrs[:1], Username: "admin", Password: adminPass,
		DialTimeout: clientTimeout, ReadTimeout: clientTimeout, WriteTimeout: clientTimeout})
	defer rdb.Close()
	for i := range 100 {
		if err := rdb.Set(ctx, fmt.Sprintf("a%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := rdb.Get(ctx, "a42").Result(); err != nil || v != "42" {
		t.Fatalf("GET: %q %v", v, err)
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Log("no redis-cli: its part is skipped")
		return
	}
	host, port, _ := strings.Cut(sc.addrs[0], ":")
	out, err := exec.CommandContext(ctx, "redis-cli", "-c", "-h", host, "-p", port, "--user", "admin", "--pass", adminPass, "--no-auth-warning",
		"SET", remote, "from-cli").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("redis-cli -c SET: %s %v", out, err)
	}
	if v, err := rdb.Get(ctx, remote).Result(); err != nil || v != "from-cli" {
		t.Fatalf("GET after redis-cli: %q %v", v, err)
	}
}

// Each node holds at most --maps-max-bytes; past it keys are evicted and
// counted (INFO stats evicted_keys, shoal_maps_evictions_total).
func TestMemoryBoundEvicts(t *testing.T) {
	sc := startShoal(t, 3, func(i int, c *server.Config) { c.Maps.MaxBytes = 64 << 10 })
	c := dial(t, sc.addrs[0])
	c.auth(t)
	const n = 3000
	val := strings.Repeat("v", 100)
	for i := 0; i < n; i += 100 {
		var cmds [][]string
		for j := i; j < i+100; j++ {
			cmds = append(cmds, []string{"SET", fmt.Sprintf("e%d", j), val})
		}
		c.send(t, cmds...)
		for range cmds {
			if r := c.read(t); r != "+OK" {
				t.Fatalf("SET: %s", r)
			}
		}
	}
	size, err := strconv.Atoi(strings.TrimPrefix(c.do(t, "DBSIZE"), ":"))
	if err != nil || size >= n || size == 0 {
		t.Fatalf("DBSIZE %d (%v) after %d keys over a 64 KiB bound per node", size, err, n)
	}
	var evicted uint64
	for _, s := range sc.nodes {
		st := s.Maps().Stats()
		evicted += st.Evictions
		if st.Bytes > 64<<10+4<<10 {
			t.Errorf("%s holds %d bytes as owner, over its bound", s.Node().Name(), st.Bytes)
		}
	}
	if evicted == 0 {
		t.Fatal("no eviction counted")
	}
	if info := c.do(t, "INFO", "stats"); !strings.Contains(info, "evicted_keys:") || strings.Contains(info, "evicted_keys:0\\r") {
		t.Fatalf("INFO stats: %s", info)
	}
	t.Logf("%d of %d keys kept, %d evictions", size, n, evicted)
}
