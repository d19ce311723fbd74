package resp_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// rueidis with client-side caching (CLIENT TRACKING ON OPTIN; CLIENT
// CACHING YES, MULTI, PTTL, GET, EXEC for each cached read): a value it
// cached is invalidated when another client writes the key through
// another node, and the next read fetches the new value.
func TestRueidisClientSideCaching(t *testing.T) {
	sc := startShoal(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	key := sc.keyOwnedBy(1, "rueidis")
	w := dial(t, sc.addrs[2])
	w.auth(t)
	if r := w.do(t, "SET", key, "v1"); r != "+OK" {
		t.Fatalf("SET: %s", r)
	}
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{sc.addrs[0]}, Username: "admin", Password: adminPass,
		ConnWriteTimeout: clientTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func() rueidis.RedisResult { return c.DoCache(ctx, c.B().Get().Key(key).Cache(), time.Minute) }
	// resets counts what may rightly take a cached value without a write:
	// a lease lapse's or a partition move's drop, a connection closed for
	// a push it did not take in time (a loaded machine, CI once).
	resets := func() (n uint64) {
		for _, s := range sc.nodes {
			st := s.RESP().Stats()
			n += st.TrackingResets + st.PushKills
		}
		return n
	}
	before := resets()
	r := get()
	if v, err := r.ToString(); err != nil || v != "v1" || r.IsCacheHit() {
		t.Fatalf("first read: %q %v (cache hit %v)", v, err, r.IsCacheHit())
	}
	for tries := 0; ; tries++ {
		r = get()
		if v, err := r.ToString(); err != nil || v != "v1" {
			t.Fatalf("second read: %q %v", v, err)
		}
		if r.IsCacheHit() {
			break
		}
		after := resets()
		if after == before || tries == 20 {
			t.Fatalf("second read missed rueidis's cache (%d resets or closed connections meanwhile; try %d), want a hit", after-before, tries)
		}
		t.Logf("a read missed the cache after a reset or a closed connection; again")
		before = after
	}
	// The write through node 3 is acknowledged after the invalidation
	// was written to rueidis's connection: once rueidis's reader has
	// read it, the cached v1 is gone.
	if r := w.do(t, "SET", key, "v2"); r != "+OK" {
		t.Fatalf("SET: %s", r)
	}
	testkit.Eventually(t, 10*time.Second, "the cached value replaced", func() bool {
		v, err := get().ToString()
		return err == nil && v == "v2"
	})
	r = get()
	if v, _ := r.ToString(); v != "v2" || !r.IsCacheHit() {
		t.Fatalf("after the refetch: %q (cache hit %v)", v, r.IsCacheHit())
	}
}
