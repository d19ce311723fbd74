package resp_test

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// readPush reads the next reply and fails unless it is want.
func (c *client) expect(t *testing.T, what, want string) {
	t.Helper()
	if got := c.read(t); got != want {
		t.Fatalf("%s: %s, want %s", what, got, want)
	}
}

// Client-side caching: a RESP3 connection on one node reads a key owned
// by another; a write of it through a third node is acknowledged only
// after the reader's invalidation was written to its socket. RESP2 with
// REDIRECT gets it on __redis__:invalidate; BCAST by prefix; pub/sub
// across nodes.
func TestTrackingAndPubSub(t *testing.T) {
	sc := startShoal(t, 3, nil)
	key := sc.keyOwnedBy(1, "track")

	reader := dial(t, sc.addrs[0])
	reader.auth(t)
	if r := reader.do(t, "HELLO", "3"); !strings.HasPrefix(r, "%{") {
		t.Fatalf("HELLO 3: %s", r)
	}
	if r := reader.do(t, "CLIENT", "TRACKING", "ON"); r != "+OK" {
		t.Fatalf("TRACKING ON: %s", r)
	}
	writer := dial(t, sc.addrs[2])
	writer.auth(t)
	writer.do(t, "SET", key, "v1")
	for round := range 3 {
		want := "v" + strconv.Itoa(round+1)
		if r := reader.do(t, "GET", key); r != `$"`+want+`"` {
			t.Fatalf("round %d GET: %s", round, r)
		}
		next := "v" + strconv.Itoa(round+2)
		if r := writer.do(t, "SET", key, next); r != "+OK" {
			t.Fatalf("SET: %s", r)
		}
		// Written before the SET was acknowledged: already there.
		reader.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		reader.expect(t, "the invalidation", `>[$"invalidate" *[$"`+key+`"]]`)
	}
	// A second write without a read in between sends nothing more; the
	// next reply the reader gets is its own.
	writer.do(t, "SET", key, "again")
	if r := reader.do(t, "PING"); r != "+PONG" {
		t.Fatalf("after an unread key's write: %s", r)
	}
	if r := reader.do(t, "CLIENT", "TRACKINGINFO"); r != `%{$"flags"=~[$"on"] $"redirect"=:0 $"prefixes"=*[]}` {
		t.Fatalf("TRACKINGINFO: %s", r)
	}

	// RESP2: invalidations go to the REDIRECT connection.
	sink := dial(t, sc.addrs[1])
	sink.auth(t)
	id := strings.TrimPrefix(sink.do(t, "CLIENT", "ID"), ":")
	if r := sink.do(t, "SUBSCRIBE", "__redis__:invalidate"); r != `*[$"subscribe" $"__redis__:invalidate" :1]` {
		t.Fatalf("SUBSCRIBE: %s", r)
	}
	r2 := dial(t, sc.addrs[1])
	r2.auth(t)
	if r := r2.do(t, "CLIENT", "TRACKING", "ON"); !strings.HasPrefix(r, "-ERR") {
		t.Fatalf("RESP2 tracking without REDIRECT: %s", r)
	}
	if r := r2.do(t, "CLIENT", "TRACKING", "ON", "REDIRECT", id); r != "+OK" {
		t.Fatalf("TRACKING ON REDIRECT: %s", r)
	}
	r2.do(t, "GET", key)
	writer.do(t, "SET", key, "via-redirect")
	sink.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	sink.expect(t, "the redirected invalidation", `*[$"message" $"__redis__:invalidate" *[$"`+key+`"]]`)

	// BCAST: changes of keys under a prefix, read or not.
	bc := dial(t, sc.addrs[2])
	bc.auth(t)
	bc.do(t, "HELLO", "3")
	if r := bc.do(t, "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "news:"); r != "+OK" {
		t.Fatalf("BCAST: %s", r)
	}
	news := sc.keyOwnedBy(0, "news:")
	writer.do(t, "SET", news, "x")
	bc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	bc.expect(t, "the broadcast invalidation", `>[$"invalidate" *[$"`+news+`"]]`)
	writer.do(t, "SET", "other:1", "x")
	if r := bc.do(t, "PING"); r != "+PONG" {
		t.Fatalf("a key outside the prefix was broadcast: %s", r)
	}

	// Pub/sub across nodes.
	sub := dial(t, sc.addrs[0])
	sub.auth(t)
	if r := sub.do(t, "PSUBSCRIBE", "chan.*"); r != `*[$"psubscribe" $"chan.*" :1]` {
		t.Fatalf("PSUBSCRIBE: %s", r)
	}
	if r := sub.do(t, "GET", "x"); !strings.HasPrefix(r, "-ERR Can't execute 'get'") {
		t.Fatalf("GET while subscribed: %s", r)
	}
	pub := dial(t, sc.addrs[2])
	pub.auth(t)
	if r := pub.do(t, "PUBLISH", "chan.1", "hello"); r != ":0" {
		t.Fatalf("PUBLISH (no local receiver): %s", r)
	}
	sub.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	sub.expect(t, "the message from another node", `*[$"pmessage" $"chan.*" $"chan.1" $"hello"]`)
	if r := sub.do(t, "PUNSUBSCRIBE"); r != `*[$"punsubscribe" $"chan.*" :0]` {
		t.Fatalf("PUNSUBSCRIBE: %s", r)
	}
	if r := sub.do(t, "GET", "x"); r != "nil" {
		t.Fatalf("GET after unsubscribing: %s", r)
	}
}
