package l2cache

import (
	"context"
	"sync/atomic"
	"testing"
)

// waitLocal waits until the LOCAL backend's ristretto has applied its
// buffered sets and deletes (nothing to do in other modes).
func (c *Cache) waitLocal() {
	c.eachBackend(func(be backend) {
		switch b := be.(type) {
		case *local:
			b.store.Wait()
		case *near:
			b.store.Wait()
		}
	})
}

// distOf is a DISTRIBUTED cache's backend (nil in other modes).
func distOf(c *Cache) *dist {
	if c.view.Load().read == beLocal {
		return nil
	}
	d, _ := c.backends[beDist].(*dist)
	return d
}

// lookup is a LOCAL region's cache check, without loading.
func (r *Region) lookup(key string, spaces []string) ([]byte, bool) {
	return r.part(beLocal).(*localRegion).lookup(key, spaces)
}

// newKeeper starts a table keeper that the test's end stops.
func newKeeper(tb testing.TB, cfg TableConfig) *TableKeeper {
	tb.Helper()
	k, err := NewTableKeeper(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.Close)
	return k
}

// ownerHolds reports whether the owner of region's key (in the first
// cache's table) holds an entry for it.
func ownerHolds(caches []*Cache, region, key string) bool {
	_, e := ownerEntry(caches, region, key)
	return e != nil
}

// ownerEntry is the entry the owner of region's key (in the first cache's
// table) holds for it, if it holds one, and the owner's cache.
func ownerEntry(caches []*Cache, region, key string) (*Cache, *entry) {
	d0 := distOf(caches[0])
	p := d0.partition(region, key)
	owner := d0.keeper.Table().Owner(p)
	for _, c := range caches {
		if d := distOf(c); d != nil && d.self == owner {
			dp, _ := d.part(p)
			dp.mu.Lock()
			defer dp.mu.Unlock()
			if e := dp.entries[region+"\x00"+key]; dp.owner && e != nil {
				return c, e
			}
			return c, nil
		}
	}
	return nil, nil
}

// heldLoad starts r.Get of key whose load reads db and then waits, and
// returns once the load has read: the reader of the stale-put race,
// between its read and its put. release lets the load finish and returns
// what the Get returned.
func heldLoad(ctx context.Context, r *Region, key string, db *atomic.Value) (release func() string) {
	started, rel, got := make(chan struct{}), make(chan struct{}), make(chan string)
	go func() {
		v, _ := r.Get(ctx, key, func(context.Context) ([]byte, error) {
			read := db.Load().(string)
			close(started)
			<-rel
			return []byte(read), nil
		})
		got <- string(v)
	}()
	<-started
	return func() string { close(rel); return <-got }
}
