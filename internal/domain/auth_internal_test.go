package domain

import (
	"testing"
	"time"
)

// The verification cache remembers a success for its TTL, only for the
// same user, stored hash and password.
func TestVerifiedCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newVerifiedCache(time.Minute, func() time.Time { return now })
	c.remember(1, "hash-a", "pw")
	for _, k := range []struct {
		user       int64
		hash, pass string
		want       bool
	}{{1, "hash-a", "pw", true}, {2, "hash-a", "pw", false}, {1, "hash-b", "pw", false}, {1, "hash-a", "pw2", false}, {1, "hash-apw", "", false}} {
		if got := c.verified(k.user, k.hash, k.pass); got != k.want {
			t.Errorf("verified(%d, %q, %q) = %v", k.user, k.hash, k.pass, got)
		}
	}
	now = now.Add(time.Minute)
	if c.verified(1, "hash-a", "pw") {
		t.Fatal("an expired verification was served")
	}
	off := newVerifiedCache(-1, time.Now)
	off.remember(1, "h", "p")
	if off.verified(1, "h", "p") {
		t.Fatal("a disabled cache remembered")
	}
	for i := 0; i < maxVerified+10; i++ {
		c.remember(int64(i), "h", "p")
	}
	if len(c.entries) > maxVerified {
		t.Fatalf("%d entries, bound %d", len(c.entries), maxVerified)
	}
}
