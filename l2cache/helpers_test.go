package l2cache

// waitLocal waits until the LOCAL backend's ristretto has applied its
// buffered sets and deletes (nothing to do in other modes).
func (c *Cache) waitLocal() {
	if b, ok := c.be.(*local); ok {
		b.store.Wait()
	}
}

// distOf is a DISTRIBUTED cache's backend (nil in other modes).
func distOf(c *Cache) *dist {
	d, _ := c.be.(*dist)
	return d
}

// lookup is a LOCAL region's cache check, without loading.
func (r *Region) lookup(key string, spaces []string) ([]byte, bool) {
	return r.be.(*localRegion).lookup(key, spaces)
}
