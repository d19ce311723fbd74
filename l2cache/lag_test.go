package l2cache

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestLagBuckets(t *testing.T) {
	for d, want := range map[time.Duration]int{
		-time.Second:            0,
		0:                       0,
		999 * time.Nanosecond:   0,
		time.Microsecond:        1,
		3 * time.Microsecond:    2,
		time.Millisecond:        10,
		time.Second:             20,
		time.Hour:               LagBuckets - 1,
		68 * time.Second:        LagBuckets - 1,
		67 * time.Second:        LagBuckets - 2,
		1023 * time.Microsecond: 10,
	} {
		if got := LagBucket(d); got != want {
			t.Errorf("LagBucket(%v) = %d, want %d", d, got, want)
		}
		if want > 0 && want < LagBuckets-1 && d >= LagBucketBound(want) {
			t.Errorf("%v is not below bucket %d's bound %v", d, want, LagBucketBound(want))
		}
	}
}

// An invalidation received on the bus is counted in the lag histogram,
// and the sender's own histogram stays empty.
func TestInvalidationLagRecorded(t *testing.T) {
	_, caches := nodeCaches(t, 3, 2, InvalidationAsync)
	a := region(t, caches[0], "pr", NonstrictReadWrite)
	region(t, caches[1], "pr", NonstrictReadWrite)
	if err := a.Evict(context.Background(), "1"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the invalidation at B", func() bool {
		return caches[1].stats.InvalidationsReceived.Load() == 1
	})
	lag := caches[1].Stats().Node.InvalidationLag
	var n uint64
	for _, c := range lag {
		n += c
	}
	if len(lag) != LagBuckets || n != 1 || lag[LagBuckets-1] != 0 {
		t.Fatalf("B's lag histogram %v, want one invalidation under a minute", lag)
	}
	if own := caches[0].Stats().Node.InvalidationLag; own != nil {
		t.Fatalf("the sender's histogram %v, want none", own)
	}
}
