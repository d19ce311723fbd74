package dmap

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

// Every node reads what any node wrote, through the owner.
func TestReadYourWritesFromEveryNode(t *testing.T) {
	tc := start(t, 1, 3, 1, nil)
	for i := range 50 {
		k := fmt.Sprintf("k%d", i)
		if r := write(t, tc.maps[i%3], set(k, "v"+k)); r.Err != nil || r.Int != 1 {
			t.Fatalf("SET %s: %+v", k, r)
		}
		for j, d := range tc.maps {
			if r := do(t, d, get(k)); string(r.Value) != "v"+k {
				t.Fatalf("node %d read %s = %q, want %q", j+1, k, r.Value, "v"+k)
			}
		}
	}
	r := do(t, tc.maps[0], Op{Code: CodeIncrBy, Key: "k1", N: 1})
	if r.Err != ErrNotInteger {
		t.Fatalf("INCR of a non-integer: %+v", r)
	}
	if st := tc.maps[0].Stats(); st.RemoteCalls == 0 {
		t.Fatal("no remote call counted")
	}
}

// The owner of a partition is killed after acknowledging writes: its
// backup takes over with every one of them.
func TestOwnerKilledBackupHasAcknowledgedWrites(t *testing.T) {
	tc := start(t, 2, 3, 1, nil)
	victim := tc.members[2].Node.Name()
	var keys []string
	for i := range 40 {
		k := keyOwnedBy(tc.maps[0], victim, fmt.Sprintf("w%d-", i))
		keys = append(keys, k)
		if r := write(t, tc.maps[i%2], set(k, fmt.Sprint(i+1))); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	tc.members[2].Kill()
	testkit.Eventually(t, 30*time.Second, "a table without the victim", func() bool {
		return tc.maps[0].Owner(PartitionOf(keys[0], 271)) != victim && tc.maps[1].Owner(PartitionOf(keys[0], 271)) != victim
	})
	for i, k := range keys {
		r := do(t, tc.maps[i%2], get(k))
		if want := fmt.Sprint(i + 1); string(r.Value) != want {
			t.Fatalf("after the owner died, %s = %q (nil %v), want %s", k, r.Value, r.Nil, want)
		}
	}
	var takeovers uint64
	for _, d := range tc.maps[:2] {
		takeovers += d.Stats().Takeovers
	}
	if takeovers == 0 {
		t.Fatal("no takeover counted")
	}
}

// A tracked read registers the node; a write through another node tells
// it before the write is acknowledged.
func TestTrackedReadInvalidatedBeforeAck(t *testing.T) {
	tc := start(t, 3, 3, 1, nil)
	for _, owner := range []int{0, 1, 2} {
		k := keyOwnedBy(tc.maps[0], tc.members[owner].Node.Name(), "t")
		write(t, tc.maps[0], set(k, "1"))
		if _, err := tc.maps[1].Do(ctx(t), []Op{get(k)}, DoOptions{Track: true}); err != nil {
			t.Fatal(err)
		}
		before := tc.invs[1].count(k)
		write(t, tc.maps[2], set(k, "2"))
		if got := tc.invs[1].count(k); got != before+1 {
			t.Fatalf("owner %d: the reader's node was told %d times, want %d, by the time the write returned", owner+1, got, before+1)
		}
		// Forgotten after one change, until read again.
		write(t, tc.maps[2], set(k, "3"))
		if got := tc.invs[1].count(k); got != before+1 {
			t.Fatalf("told again without reading again")
		}
	}
}

func TestTTLAndExpiryAtOwner(t *testing.T) {
	tc := start(t, 4, 3, 1, nil)
	k := "ttl"
	do(t, tc.maps[0], Op{Code: CodeSet, Key: k, Args: [][]byte{[]byte("x")}, Flags: FlagExpire | FlagRelative, N: 1500})
	if r := do(t, tc.maps[1], Op{Code: CodeTTL, Key: k}); r.Int <= 0 || r.Int > 1500 {
		t.Fatalf("PTTL %d", r.Int)
	}
	testkit.Eventually(t, 10*time.Second, "the key to expire", func() bool { return do(t, tc.maps[2], get(k)).Nil })
	if r := do(t, tc.maps[1], Op{Code: CodeTTL, Key: k}); r.Int != -2 {
		t.Fatalf("TTL of an expired key: %d", r.Int)
	}
	testkit.Eventually(t, 10*time.Second, "the sweep to count it", func() bool {
		var n uint64
		for _, d := range tc.maps {
			n += d.Stats().Expired
		}
		return n > 0
	})
}

func TestMemoryBoundEvicts(t *testing.T) {
	tc := start(t, 5, 2, 1, func(c *Config) { c.MaxBytes = 64 << 10 })
	v := string(make([]byte, 1000))
	for i := range 300 {
		write(t, tc.maps[i%2], set(fmt.Sprintf("big%d", i), v))
	}
	testkit.Eventually(t, 10*time.Second, "evictions", func() bool {
		return tc.maps[0].Stats().Evictions+tc.maps[1].Stats().Evictions > 0 &&
			tc.maps[0].bytes.Load() <= 64<<10 && tc.maps[1].bytes.Load() <= 64<<10
	})
}

// SCAN returns every key exactly... at least once, across partitions.
func TestScanVisitsEveryKey(t *testing.T) {
	tc := start(t, 6, 3, 1, nil)
	want := map[string]bool{}
	for i := range 500 {
		k := fmt.Sprintf("s:%d", i)
		want[k] = true
		if r := write(t, tc.maps[i%3], set(k, "v")); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	do(t, tc.maps[0], Op{Code: CodeHSet, Key: "h:1", Args: [][]byte{[]byte("f"), []byte("v")}})
	got := map[string]bool{}
	var cur uint64
	calls := 0
	for {
		keys, next, err := tc.maps[1].Scan(ctx(t), cur, ScanOptions{Count: 37, Match: "s:*"})
		if err != nil {
			t.Fatal(err)
		}
		calls++
		for _, k := range keys {
			got[k] = true
		}
		if cur = next; cur == 0 {
			break
		}
	}
	if len(got) != len(want) || calls < 500/37 {
		t.Fatalf("scan found %d keys in %d calls, want %d", len(got), calls, len(want))
	}
	keys, _, _ := tc.maps[2].Scan(ctx(t), 0, ScanOptions{Count: 10000, Type: "hash"})
	if !slices.Equal(keys, []string{"h:1"}) {
		t.Fatalf("TYPE hash: %v", keys)
	}
}

// Between idle walks (here an hour apart), a key with a deadline that
// nobody reads again is still expired by the owner's sweep, and the node
// that read it is told. The maps' clock jumps past the deadline; nothing
// but the sweep looks at the key.
func TestSweepExpiresUnreadKeysBetweenIdleWalks(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	tc := start(t, 9, 3, 1, func(c *Config) { c.IdleSweepEvery, c.Now = time.Hour, clock })
	owner := tc.members[1].Node.Name()
	k := keyOwnedBy(tc.maps[0], owner, "idle-ttl")
	if r := write(t, tc.maps[0], Op{Code: CodeSet, Key: k, Args: [][]byte{[]byte("x")}, Flags: FlagExpire | FlagRelative, N: time.Hour.Milliseconds()}); r.Err != nil {
		t.Fatal(r.Err)
	}
	rs, err := tc.maps[2].Do(ctx(t), []Op{get(k)}, DoOptions{Track: true})
	if err != nil || string(rs[0].Value) != "x" {
		t.Fatalf("tracked read: %+v, %v", rs, err)
	}
	before := tc.invs[2].count(k)
	offset.Store(int64(2 * time.Hour))
	testkit.Eventually(t, 30*time.Second, "the owner's sweep to expire the key", func() bool { return tc.maps[1].Stats().Expired == 1 })
	testkit.Eventually(t, 30*time.Second, "the reader's node told", func() bool { return tc.invs[2].count(k) > before })
	for i, d := range tc.maps {
		if n := d.parts[PartitionOf(k, 271)].expiring.Load(); n != 0 {
			t.Fatalf("node %d counts %d keys with a deadline in the partition, want 0", i+1, n)
		}
	}
}

// endingLease is a node's read lease that the test can end at a moment of
// its choosing, whatever its renewals say.
type endingLease struct {
	*l2cache.ReadLease
	end atomic.Int64 // time.Now().UnixNano() from which it is not valid; 0: none
}

func (l *endingLease) Valid() bool {
	e := l.end.Load()
	return l.ReadLease.Valid() && (e == 0 || time.Now().UnixNano() < e)
}

func (l *endingLease) ValidFor() time.Duration {
	v := l.ReadLease.ValidFor()
	if e := l.end.Load(); e != 0 {
		v = min(v, max(time.Duration(e-time.Now().UnixNano()), 0))
	}
	return v
}

// Between idle walks (here an hour apart) the sweep loop sleeps, yet a
// node whose lease runs out still tells its clients at once (from then on
// an owner may acknowledge writes without telling it), as when the loop
// looked every SweepEvery.
func TestLeaseEndToldWhileIdle(t *testing.T) {
	var leases []*endingLease
	tc := start(t, 11, 3, 1, func(c *Config) {
		c.IdleSweepEvery = time.Hour
		l := &endingLease{ReadLease: c.Lease.(*l2cache.ReadLease)}
		c.Lease, leases = l, append(leases, l)
	})
	// Node 3's loop is idle: no owner waits for its start of service any
	// more, so it wakes about once a lease (1 s here), not every 50 ms.
	testkit.Eventually(t, 30*time.Second, "node 3's sweep loop idle", func() bool {
		n := tc.maps[2].sweepWakes.Load()
		time.Sleep(300 * time.Millisecond)
		return tc.maps[2].sweepWakes.Load()-n <= 1
	})
	before := tc.invs[2].nodeWideCount()
	leases[2].end.Store(time.Now().Add(100 * time.Millisecond).UnixNano())
	testkit.Eventually(t, 30*time.Second, "node 3's clients told that its lease ended", func() bool {
		return tc.invs[2].nodeWideCount() > before
	})
}
