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
	r := get()
	if v, err := r.ToString(); err != nil || v != "v1" || r.IsCacheHit() {
		t.Fatalf("first read: %q %v (cache hit %v)", v, err, r.IsCacheHit())
	}
	r = get()
	if v, err := r.ToString(); err != nil || v != "v1" || !r.IsCacheHit() {
		t.Fatalf("second read: %q %v (cache hit %v), want a hit", v, err, r.IsCacheHit())
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
