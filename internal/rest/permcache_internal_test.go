package rest

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
)

// The cache holds at most permCacheMax decisions: a full cache drops the
// expired ones first, and all of them if none has expired.
func TestPermCacheBounded(t *testing.T) {
	c := newPermCache(time.Hour)
	for i := range permCacheMax {
		c.put(1, int64(i), domain.PermRead)
	}
	if p, ok := c.get(1, 7); !ok || p != domain.PermRead {
		t.Fatalf("get(1, 7) = %v, %v", p, ok)
	}
	c.put(2, 1, domain.PermWrite)
	if len(c.m) != 1 {
		t.Fatalf("%d decisions after the full cache took one more, want 1", len(c.m))
	}
	if p, ok := c.get(2, 1); !ok || p != domain.PermWrite {
		t.Fatalf("get(2, 1) = %v, %v", p, ok)
	}
	// Expired decisions are not served, and make room first.
	c.ttl = -time.Second
	for i := range permCacheMax - 2 {
		c.put(3, int64(i), domain.PermRead)
	}
	if _, ok := c.get(3, 0); ok {
		t.Fatal("an expired decision was served")
	}
	c.ttl = time.Hour
	c.put(4, 1, domain.PermRead)
	c.put(4, 2, domain.PermRead)
	if len(c.m) != 3 {
		t.Fatalf("%d decisions, want the 3 unexpired ones", len(c.m))
	}
	if newPermCache(-1) != nil || newPermCache(0) != nil {
		t.Fatal("a cache without a positive TTL")
	}
	var none *permCache
	none.put(1, 1, domain.PermRead)
	if _, ok := none.get(1, 1); ok {
		t.Fatal("a nil cache served a decision")
	}
}
