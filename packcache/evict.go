package packcache

import (
	"context"
	"time"
)

// evictLocked evicts least-recently-read entries until the published
// bytes fit MaxBytes. An evicted file being read stays on disk until its
// last reader closes it.
func (c *Cache) evictLocked() {
	for c.bytes > c.cfg.MaxBytes && c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back().Value.(*entry), &c.stats.evictions)
	}
}

// Sweep is the periodic expiry job: it drops the entries whose TTL has
// passed, evicts to the budget, and while Dir's file system is below the
// free-space floor evicts least-recently-read entries. It returns how many
// entries it removed. It holds the cache's lock while it works, without
// blocking on I/O other than unlinking files.
func (c *Cache) Sweep(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	before := c.lru.Len()
	c.expireLocked(c.cfg.Clock())
	c.evictLocked()
	for c.lru.Len() > 0 && c.checkFreeLocked() != nil {
		c.removeLocked(c.lru.Back().Value.(*entry), &c.stats.evictions)
	}
	return before - c.lru.Len(), nil
}

func (c *Cache) expireLocked(now time.Time) {
	for el := c.lru.Back(); el != nil; {
		e, prev := el.Value.(*entry), el.Prev()
		if !now.Before(e.expires) {
			c.removeLocked(e, &c.stats.expired)
		}
		el = prev
	}
}
