package rest

import (
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
)

// permCache keeps the read-permission decisions on private repositories
// for a short while (Config.PermissionTTL), so that a burst of reads by
// one user asks the database once. It is node-local and not invalidated:
// permissions are granted and revoked by `shoal user grant`, straight in
// the shared database, which no node hears of (so an L2 entry would never
// be invalidated either); the bounded lifetime is what makes a cached
// decision acceptable. It holds at most permCacheMax decisions; when full,
// the expired ones go, and if none has expired, all of them.
type permCache struct {
	ttl time.Duration

	mu sync.RWMutex
	m  map[permKey]permEntry
}

const permCacheMax = 1 << 16

type permKey struct {
	user, repo int64 // repository ID: a repository created again under the same name is another key
}

type permEntry struct {
	perm    domain.Perm
	expires time.Time
}

func newPermCache(ttl time.Duration) *permCache {
	if ttl <= 0 {
		return nil
	}
	return &permCache{ttl: ttl, m: map[permKey]permEntry{}}
}

// get returns a decision that has not expired. A nil cache has none.
func (c *permCache) get(user, repo int64) (domain.Perm, bool) {
	if c == nil {
		return 0, false
	}
	c.mu.RLock()
	e, ok := c.m[permKey{user, repo}]
	c.mu.RUnlock()
	if !ok || !time.Now().Before(e.expires) {
		return 0, false
	}
	return e.perm, true
}

// put records a decision the database has just made.
func (c *permCache) put(user, repo int64, p domain.Perm) {
	if c == nil {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= permCacheMax {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= permCacheMax {
			clear(c.m)
		}
	}
	c.m[permKey{user, repo}] = permEntry{perm: p, expires: now.Add(c.ttl)}
}
