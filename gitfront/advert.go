package gitfront

import (
	"container/list"
	"context"
	"sync"
)

// Generations gives a repository's ref generation, a number that grows
// with every push (the pack cache's generation store satisfies it). It
// must be safe for concurrent use.
type Generations interface {
	Generation(ctx context.Context, repo string) (uint64, error)
}

// advertCache keeps ref advertisements (git upload-pack --advertise-refs
// output) per repository, protocol and generation, least recently used
// first out once over its byte budget. An entry is only served for the
// generation it was made under: a push bumps the generation, so the next
// lookup misses. Safe for concurrent use.
type advertCache struct {
	mu      sync.Mutex
	max     int64
	size    int64
	lru     *list.List // of *advert, most recent at the front
	entries map[advertKey]*list.Element
}

type advertKey struct{ repo, protocol string }

type advert struct {
	key  advertKey
	gen  uint64
	data []byte
}

func newAdvertCache(max int64) *advertCache {
	return &advertCache{max: max, lru: list.New(), entries: map[advertKey]*list.Element{}}
}

// get returns the advertisement made under gen, if kept.
func (c *advertCache) get(k advertKey, gen uint64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || e.Value.(*advert).gen != gen {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*advert).data, true
}

// put keeps data as the advertisement under gen, replacing an older
// generation's; it never replaces a newer one (a slow git run started
// before a push must not win over one started after).
func (c *advertCache) put(k advertKey, gen uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		if e.Value.(*advert).gen > gen {
			return
		}
		c.remove(e)
	}
	if int64(len(data)) > c.max/4 {
		return // one advertisement may not crowd out the rest
	}
	c.entries[k] = c.lru.PushFront(&advert{key: k, gen: gen, data: data})
	c.size += int64(len(data))
	for c.size > c.max {
		c.remove(c.lru.Back())
	}
}

func (c *advertCache) remove(e *list.Element) {
	a := c.lru.Remove(e).(*advert)
	delete(c.entries, a.key)
	c.size -= int64(len(a.data))
}

// capWriter keeps a copy of what passes through, up to max bytes; over
// that it keeps nothing (the copy would be incomplete).
type capWriter struct {
	max  int
	buf  []byte
	over bool
}

func (c *capWriter) Write(p []byte) (int, error) {
	if !c.over && len(c.buf)+len(p) <= c.max {
		c.buf = append(c.buf, p...)
	} else {
		c.over, c.buf = true, nil
	}
	return len(p), nil
}
