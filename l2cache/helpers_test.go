package l2cache

import "testing"

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
