package resp_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/dmap"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// redisCluster starts a one-node Redis Cluster (every slot on it), or
// returns "" when redis-server is not installed.
func redisCluster(t *testing.T) string {
	addr := redisServerArgs(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	if addr == "" {
		return ""
	}
	c := dial(t, addr)
	if r := c.do(t, "CLUSTER", "ADDSLOTSRANGE", "0", "16383"); r != "+OK" {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %s", r)
	}
	testkit.Eventually(t, 30*time.Second, "the Redis Cluster's state ok", func() bool {
		return strings.Contains(c.do(t, "CLUSTER", "INFO"), "cluster_state:ok")
	})
	c.close()
	return addr
}

// A connection in cluster mode against a real Redis Cluster node that
// holds every slot, with keys whose slots the shoal node serves:
// transactions across slots (CROSSSLOT at EXEC, which discards them, or
// at queueing, then EXECABORT or CROSSSLOT), CLUSTER COUNTKEYSINSLOT and
// INFO keyspace (the whole cluster's keys) answer alike.
func TestClusterModeAgainstRedisCluster(t *testing.T) {
	raddr := redisCluster(t)
	if raddr == "" {
		t.Skip("redis-server is not installed")
	}
	sc := startShoal(t, 3, nil)
	k1 := sc.keyOwnedBy(0, "cm1-")
	k2 := sc.keyOwnedBy(0, "cm2-")
	for n := 0; dmap.Slot(k2) == dmap.Slot(k1); n++ {
		k2 = sc.keyOwnedBy(0, fmt.Sprintf("cm2-%d-", n))
	}
	t1, t2 := "{"+k1+"}a", "{"+k1+"}b" // k1's slot
	remote1, remote2 := sc.keyOwnedBy(1, "cmr1-"), sc.keyOwnedBy(2, "cmr2-")
	empty := -1
	for s := range dmap.Slots {
		if s != dmap.Slot(k1) && s != dmap.Slot(k2) && dmap.Slot(remote1) != s && dmap.Slot(remote2) != s {
			empty = s
			break
		}
	}
	slot := func(k string) string { return strconv.Itoa(dmap.Slot(k)) }
	steps := [][]string{
		{"MULTI"}, {"SET", k1, "1"}, {"SET", k2, "2"}, {"EXEC"}, {"GET", k1}, {"GET", k2}, {"EXEC"},
		{"MULTI"}, {"SET", t1, "1"}, {"INCR", t2}, {"GET", t1}, {"EXEC"},
		{"MULTI"}, {"MSET", k1, "1", k2, "2"}, {"EXEC"}, {"GET", k1},
		{"MULTI"}, {"SET", k1, "x"}, {"MGET", k1, k2}, {"EXEC"}, {"GET", k1},
		{"MULTI"}, {"PING"}, {"EXEC"},
		{"MULTI"}, {"SET", k2, "y", "EX", "100"}, {"EXEC"},
		{"CLUSTER", "COUNTKEYSINSLOT", slot(k1)}, {"CLUSTER", "COUNTKEYSINSLOT", slot(k2)},
		{"CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(empty)}, {"CLUSTER", "COUNTKEYSINSLOT", "16384"},
		{"CLUSTER", "COUNTKEYSINSLOT", "-1"}, {"CLUSTER", "COUNTKEYSINSLOT", "x"}, {"CLUSTER", "COUNTKEYSINSLOT"},
		{"DEL", t2}, {"CLUSTER", "COUNTKEYSINSLOT", slot(k1)},
		{"CLUSTER", "KEYSLOT"}, {"CLUSTER", "KEYSLOT", "a", "b"}, {"CLUSTER", "MYID", "x"}, {"CLUSTER", "INFO", "x"},
		{"CLUSTER", "SLOTS", "x"}, {"CLUSTER", "NODES", "x"}, {"CLUSTER", "SHARDS", "x"}, {"CLUSTER", "NOPE"},
	}
	sh, rd := dial(t, sc.addrs[0]), dial(t, raddr)
	sh.auth(t)
	sh.do(t, "CLUSTER", "SLOTS") // cluster mode (a Redis Cluster node is always)
	rd.do(t, "CLUSTER", "SLOTS")
	for i, st := range steps {
		want, got := rd.do(t, st...), sh.do(t, st...)
		if got != want {
			t.Errorf("step %d %q: shoal %s, redis %s", i, st, got, want)
		}
	}
	// INFO keyspace counts the whole cluster's keys: two more, written
	// through a plain connection to the other nodes' slots, one with a
	// deadline.
	plain := dial(t, sc.addrs[1])
	plain.auth(t)
	for _, c := range []*client{plain, rd} {
		if r := c.do(t, "SET", remote1, "r"); r != "+OK" {
			t.Fatalf("SET %s: %s", remote1, r)
		}
		if r := c.do(t, "SET", remote2, "r", "PX", "100000"); r != "+OK" {
			t.Fatalf("SET %s: %s", remote2, r)
		}
	}
	re := regexp.MustCompile(`db0:keys=\d+,expires=\d+`)
	want := re.FindString(rd.do(t, "INFO", "keyspace"))
	if want == "" {
		t.Fatalf("redis's INFO keyspace: %s", rd.do(t, "INFO", "keyspace"))
	}
	for i, addr := range sc.addrs {
		c := dial(t, addr)
		c.auth(t)
		if got := re.FindString(c.do(t, "INFO", "keyspace")); got != want {
			t.Errorf("node %d's INFO keyspace: %q, redis %q", i+1, got, want)
		}
		if got, want := c.do(t, "DBSIZE"), rd.do(t, "DBSIZE"); got != want {
			t.Errorf("node %d's DBSIZE: %s, redis %s", i+1, got, want)
		}
	}
}
