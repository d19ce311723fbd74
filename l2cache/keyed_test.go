package l2cache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestKeyTag(t *testing.T) {
	for _, tc := range []struct {
		key, tag string
		ok       bool
	}{
		{"comments:{comments/17}:pr:5", "{comments/17}", true},
		{"{a}", "{a}", true},
		{"a}b{c}d{e}", "{c}", true},
		{"x{}y{a}", "", false}, // the first '{' has nothing before its '}': no tag (Redis hashes the whole key)
		{"no braces", "", false},
		{"open{only", "", false},
		{"", "", false},
	} {
		tag, ok := KeyTag(tc.key)
		if tag != tc.tag || ok != tc.ok {
			t.Errorf("KeyTag(%q) = %q, %v; want %q, %v", tc.key, tag, ok, tc.tag, tc.ok)
		}
	}
	for s, want := range map[string]bool{
		KeyedSpace("comments/17"): true, "comments": false, "{a}b": false, "{}": false, "x{a}": false, "": false,
	} {
		if IsKeyedSpace(s) != want {
			t.Errorf("IsKeyedSpace(%q) = %v, want %v", s, !want, want)
		}
	}
}

// Every key tagged with a keyed space, in every region, is in the space's
// partition; a key without a tag is hashed with its region, as before.
func TestPartitionOfTaggedKeys(t *testing.T) {
	const n = DefaultPartitions
	s := KeyedSpace("comments/17")
	p := PartitionOf("", s, n)
	for _, region := range []string{"q", "rest.queries", ""} {
		for _, key := range []string{"comments:" + s + ":page1", s, "x" + s + "{other}"} {
			if got := PartitionOf(region, key, n); got != p {
				t.Errorf("PartitionOf(%q, %q) = %d, want the space's %d", region, key, got, p)
			}
		}
	}
	differ := 0
	for i := range 100 {
		if PartitionOf("a", fmt.Sprint(i), n) != PartitionOf("b", fmt.Sprint(i), n) {
			differ++
		}
	}
	if differ < 90 {
		t.Errorf("untagged keys: only %d of 100 hash differently in two regions", differ)
	}
}

func TestGetQueryChecksKeyedSpaces(t *testing.T) {
	c := newLocal(t, Config{})
	q, err := c.Region("q", QueryRegion, NonstrictReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := KeyedSpace("a/1"), KeyedSpace("a/2")
	var loads atomic.Int32
	load := func(context.Context) ([]byte, error) { loads.Add(1); return []byte("x"), nil }
	ctx := context.Background()
	for _, tc := range []struct {
		key    string
		spaces []string
		ok     bool
	}{
		{"list", []string{s1}, false},
		{"list:" + s2, []string{s1}, false},
		{"list:" + s1, []string{s1, s2}, false},
		{"list:" + s1, []string{"a", s1}, true},
		{"list", []string{"a"}, true},
	} {
		before := loads.Load()
		_, err := q.GetQuery(ctx, tc.key, tc.spaces, load)
		switch {
		case tc.ok && err != nil:
			t.Errorf("GetQuery(%q, %q): %v", tc.key, tc.spaces, err)
		case !tc.ok && !errors.Is(err, ErrKeyedSpace):
			t.Errorf("GetQuery(%q, %q) = %v, want ErrKeyedSpace", tc.key, tc.spaces, err)
		case !tc.ok && loads.Load() != before:
			t.Errorf("GetQuery(%q, %q) loaded, and was refused", tc.key, tc.spaces)
		case !tc.ok && !strings.Contains(err.Error(), tc.key):
			t.Errorf("GetQuery(%q, %q): the error does not name the key: %v", tc.key, tc.spaces, err)
		}
	}
}

// keyedSpaceOwnedBy finds a keyed space whose partition owner owns in c's
// table.
func keyedSpaceOwnedBy(t *testing.T, c *Cache, owner string) string {
	t.Helper()
	d := distOf(c)
	for i := range 10_000 {
		s := KeyedSpace(fmt.Sprint("comments/", i))
		if d.keeper.Table().Owner(d.partition("", s)) == owner {
			return s
		}
	}
	t.Fatal("no keyed space owned by " + owner)
	return ""
}

// An update of a keyed space goes to the space's owner, which sends it on
// to the members that read a result over it (NEAR) and to nobody else:
// one message from the writer where every member was sent one. Every node
// then reads the new result; an update of an unkeyed space still goes to
// every member.
func TestKeyedSpaceUpdateReachesOwnerAndReaders(t *testing.T) {
	forOwnedModes(t, func(t *testing.T, mode string) {
		_, members, caches := distCaches(t, 51, 4, mode)
		ctx := context.Background()
		qs := queryRegionsOn(t, caches, "q")
		// Node 1 owns the space, nodes 1 and 3 read it, node 2 writes,
		// node 4 never reads it.
		space := keyedSpaceOwnedBy(t, caches[1], members[0].Node.Name())
		key, spaces := "list:"+space, []string{"comments", space}
		var page counter
		for _, i := range []int{0, 2} {
			page.prime(t, fmt.Sprintf("the query on node %d", i+1), func() error {
				_, err := qs[i].GetQuery(ctx, key, spaces, page.load)
				return err
			})
		}
		received := func(i int) uint64 { return caches[i].Stats().Node.InvalidationsReceived }
		kinds := func(i int) map[string]uint64 { return caches[i].Stats().Node.RemoteByKind }
		before := make([]uint64, len(caches))
		for i := range caches {
			before[i] = received(i)
		}
		writerBefore := kinds(1)
		page.v.Add(1)
		if err := caches[1].UpdateSpaces(ctx, space); err != nil {
			t.Fatal(err)
		}
		after := kinds(1)
		if routed, straight := after["routed"]-writerBefore["routed"], after["spaces"]-writerBefore["spaces"]; routed != 1 || straight != 0 {
			t.Fatalf("the writer sent %d routed updates and %d to members; want 1 and 0", routed, straight)
		}
		if n := caches[1].Stats().Node.RouteFallbacks; n != 0 {
			t.Fatalf("%d updates fell back to every member", n)
		}
		if n := received(3) - before[3]; n != 0 {
			t.Fatalf("node 4, which holds nothing over %s, was sent %d updates", space, n)
		}
		if n := received(2) - before[2]; mode == cluster.CacheModeNear && n != 1 {
			t.Fatalf("node 3, which read a result over %s, applied %d updates; want 1", space, n)
		}
		for i, q := range qs {
			v, err := q.GetQuery(ctx, key, spaces, page.load)
			if err != nil || !page.is(v) {
				t.Fatalf("node %d served %s (%v) after version %d's update was acknowledged", i+1, v, err, page.v.Load())
			}
		}
		if mode == cluster.CacheModeNear {
			// Node 3 read again, registered again, and keeps its copy.
			page.prime(t, "node 3's copy again", func() error {
				_, err := qs[2].GetQuery(ctx, key, spaces, page.load)
				return err
			})
			hits := caches[2].Stats().Node.NearHits
			if _, err := qs[2].GetQuery(ctx, key, spaces, page.load); err != nil || caches[2].Stats().Node.NearHits != hits+1 {
				t.Fatalf("node 3 did not serve its near copy of a keyed result (%v)", err)
			}
		}
		// An update of the unkeyed space goes to every other member.
		writerBefore = kinds(1)
		page.v.Add(1)
		if err := caches[1].UpdateSpaces(ctx, "comments"); err != nil {
			t.Fatal(err)
		}
		after = kinds(1)
		if routed, straight := after["routed"]-writerBefore["routed"], after["spaces"]-writerBefore["spaces"]; routed != 0 || straight != 3 {
			t.Fatalf("an unkeyed update: the writer sent %d routed and %d to members; want 0 and 3", routed, straight)
		}
		for i, q := range qs {
			v, err := q.GetQuery(ctx, key, spaces, page.load)
			if err != nil || !page.is(v) {
				t.Fatalf("node %d served %s (%v) after version %d's unkeyed update was acknowledged", i+1, v, err, page.v.Load())
			}
		}
	})
}

// A write's change of an entity carries no keyed update: the update goes
// to the space's owner alongside the change, and every reader of a
// result over the space reads the new result once the write returns.
func TestKeyedSpaceUpdateAlongsideAChange(t *testing.T) {
	forOwnedModes(t, func(t *testing.T, mode string) {
		_, members, caches := distCaches(t, 52, 3, mode)
		ctx := context.Background()
		qs, rs := queryRegionsOn(t, caches, "q"), regionsOn(t, caches, "pr", ReadWrite)
		space := keyedSpaceOwnedBy(t, caches[0], members[2].Node.Name())
		key, spaces := "list:"+space, []string{"comments", space}
		var page counter
		for i := range qs {
			page.prime(t, fmt.Sprintf("the query on node %d", i+1), func() error {
				_, err := qs[i].GetQuery(ctx, key, spaces, page.load)
				return err
			})
		}
		before := caches[0].Stats().Node.RemoteByKind
		if err := rs[0].Lock(ctx, "7"); err != nil {
			t.Fatal(err)
		}
		page.v.Add(1)
		if err := rs[0].UnlockWith(ctx, "7", []byte("row"), space); err != nil {
			t.Fatal(err)
		}
		if n := caches[0].Stats().Node.RemoteByKind["routed"] - before["routed"]; n != 1 {
			t.Fatalf("the writer routed %d updates with its unlock, want 1", n)
		}
		for i, q := range qs {
			v, err := q.GetQuery(ctx, key, spaces, page.load)
			if err != nil || !page.is(v) {
				t.Fatalf("node %d served %s (%v) after version %d's unlock was acknowledged", i+1, v, err, page.v.Load())
			}
		}
	})
}

// The stale keep, keyed: a reader's get is answered by the owner (the old
// result), and before the reader keeps it the space is updated through
// the owner. The owner registered the reader before it answered, so the
// update reaches it first: it returns the old result once (the write was
// not acknowledged when it read) and never serves it again.
func TestKeyedStaleKeepRefused(t *testing.T) {
	_, members, caches := distCaches(t, 53, 3, cluster.CacheModeNear)
	ctx := context.Background()
	qs := queryRegionsOn(t, caches, "q")
	space := keyedSpaceOwnedBy(t, caches[0], members[0].Node.Name())
	key, spaces := "list:"+space, []string{space}
	var page counter
	page.prime(t, "the owner's result", func() error {
		_, err := qs[0].GetQuery(ctx, key, spaces, page.load)
		return err
	})
	if !ownerFresh(caches, "q", key, spaces) {
		t.Fatal("the owner holds no result")
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	testBeforeKeep = func(k string) {
		if k == key {
			once.Do(func() { close(entered); <-release })
		}
	}
	defer func() { testBeforeKeep = nil }()
	got := make(chan string, 1)
	go func() {
		v, _ := qs[1].GetQuery(ctx, key, spaces, page.load)
		got <- string(v)
	}()
	<-entered
	page.v.Add(1)
	if err := caches[2].UpdateSpaces(ctx, space); err != nil {
		t.Fatal(err)
	}
	close(release)
	if v := <-got; v != "0" {
		t.Fatalf("the read in flight returned %s, want the owner's 0", v)
	}
	for _, c := range caches {
		c.waitLocal() // a copy kept is in the store now, to be served
	}
	for round := range 3 {
		for i, q := range qs {
			v, err := q.GetQuery(ctx, key, spaces, page.load)
			if err != nil || !page.is(v) {
				t.Fatalf("round %d: node %d served %s (%v) after version %d's update was acknowledged", round, i+1, v, err, page.v.Load())
			}
		}
	}
}

// The space's owner dies after its update was acknowledged, or the update
// is routed while a reader's near copy came from the old owner: no node
// serves a result from before the update, through the takeover and after.
func TestKeyedResultsAfterOwnerKilled(t *testing.T) {
	forOwnedModes(t, func(t *testing.T, mode string) {
		lc := startReady(t, 54, 3, mode)
		ctx := context.Background()
		qs := queryRegionsOn(t, lc.caches, "q")
		owner := lc.follower(t)
		writer := (owner + 1) % 3
		space := keyedSpaceOwnedBy(t, lc.caches[writer], lc.members[owner].Node.Name())
		key, spaces := "list:"+space, []string{"comments", space}
		var page counter
		for i, q := range qs {
			page.prime(t, fmt.Sprintf("the query on node %d", i+1), func() error {
				_, err := q.GetQuery(ctx, key, spaces, page.load)
				return err
			})
		}
		lc.members[owner].Kill()
		testkit.Eventually(t, 20*time.Second, "a table without the dead owner", func() bool {
			return !slices.Contains(tableMembers(distOf(lc.caches[writer]).keeper.Table()), lc.members[owner].Node.Name())
		})
		page.v.Add(1)
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := lc.caches[writer].UpdateSpaces(wctx, space)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		readsFresh(t, qs, owner, key, spaces, &page, 2*testLease)
	})
}

// Randomized, against SQLite: three nodes read per-parent results over
// keyed spaces while writers update them — by UpdateSpaces, by an
// entity's unlock that names the space, and by an update of the unkeyed
// table space — with the peer messages delayed at random. No read that
// starts after a write returned sees an older version.
func TestRandomizedKeyedQueriesAgainstSQLite(t *testing.T) {
	forOwnedModes(t, func(t *testing.T, mode string) { randomizedKeyed(t, startReady(t, 55, 3, mode)) })
}

func randomizedKeyed(t *testing.T, lc *leasedCluster) {
	lc.net.SetFaults(memnet.Faults{DelayMax: 3 * time.Millisecond, Match: func(tr memnet.Traffic) bool {
		return tr.Kind == memnet.Frame && strings.HasPrefix(tr.Frame.Type, "l2.")
	}})
	const parents = 4
	db := openDB(t, parents)
	ctx := context.Background()
	qs, rs := queryRegionsOn(t, lc.caches, "q"), regionsOn(t, lc.caches, "rows", ReadWrite)
	space := func(p int) string { return KeyedSpace(fmt.Sprint("rows/", p)) }
	var acked [parents]atomic.Int64
	runWorkers(t, len(qs), 3, 120, func(rng *rand.Rand, n, w int) error {
		p := rng.IntN(parents)
		if w == 0 && rng.IntN(3) == 0 {
			return keyedWrite(ctx, db, rs[n], lc.caches[n], p, space(p), rng.IntN(3), &acked[p])
		}
		return keyedRead(ctx, db, qs[n], p, space(p), &acked[p])
	})
	var routed, fallbacks uint64
	for _, c := range lc.caches {
		routed += c.Stats().Node.RemoteByKind["routed"]
		fallbacks += c.Stats().Node.RouteFallbacks
	}
	t.Logf("%d updates routed to another node, %d fell back to every member", routed, fallbacks)
	if routed == 0 {
		t.Fatal("no update was routed")
	}
}

// keyedWrite commits a new version of parent p, then updates its keyed
// space: by UpdateSpaces (how 0), with an entity's unlock (1), or by an
// update of the unkeyed table space (2).
func keyedWrite(ctx context.Context, db *sql.DB, r *Region, c *Cache, p int, space string, how int, acked *atomic.Int64) error {
	key := fmt.Sprint(p)
	if how == 1 {
		if err := r.Lock(ctx, key); err != nil {
			return err
		}
	}
	var version int64
	if err := db.QueryRowContext(ctx, "UPDATE rows SET version = version + 1 WHERE id = ? RETURNING version", p).Scan(&version); err != nil {
		return err
	}
	var err error
	switch how {
	case 0:
		err = c.UpdateSpaces(ctx, space)
	case 1:
		err = r.Unlock(ctx, key, space)
	default:
		err = c.UpdateSpaces(ctx, "rows")
	}
	if err != nil {
		return err
	}
	raise(acked, version)
	return nil
}

func keyedRead(ctx context.Context, db *sql.DB, q *Region, p int, space string, acked *atomic.Int64) error {
	floor := acked.Load()
	v, err := q.GetQuery(ctx, fmt.Sprint("version-of:", space), []string{"rows", space}, func(ctx context.Context) ([]byte, error) {
		var version int64
		if err := db.QueryRowContext(ctx, "SELECT version FROM rows WHERE id = ?", p).Scan(&version); err != nil {
			return nil, err
		}
		return []byte(fmt.Sprint(version)), nil
	})
	if err != nil {
		return err
	}
	var got int64
	fmt.Sscan(string(v), &got)
	if got < floor {
		return fmt.Errorf("parent %d: read version %d, but version %d was written before the read began", p, got, floor)
	}
	return nil
}

// A write's query-space update that reaches nobody — its node is cut off
// from every other, so it can neither tell them nor exclude them — fails,
// and the result its spaces' owner holds stays from before the write. The
// write was not acknowledged, but the cache must still converge: the node
// sends the update again once it can, and every node then reads the new
// result.
func TestFailedSpaceUpdateSentAgain(t *testing.T) {
	forOwnedModes(t, func(t *testing.T, mode string) {
		defer func(d time.Duration) { retryEvery = d }(retryEvery)
		retryEvery = 100 * time.Millisecond
		lc := startReady(t, 56, 3, mode)
		qs := queryRegionsOn(t, lc.caches, "q")
		writer := lc.follower(t)
		owner := (writer + 1) % 3
		ctx := context.Background()
		for _, keyed := range []bool{false, true} {
			key, spaces, update := queryOwnedBy(t, lc.caches[writer], lc.members[owner].Node.Name()), []string{"comments"}, "comments"
			if keyed {
				update = keyedSpaceOwnedBy(t, lc.caches[writer], lc.members[owner].Node.Name())
				key, spaces = "list:"+update, []string{"comments", update}
			}
			var page counter
			for i, q := range qs {
				page.prime(t, fmt.Sprintf("the query on node %d", i+1), func() error {
					_, err := q.GetQuery(ctx, key, spaces, page.load)
					return err
				})
			}
			retried := lc.caches[writer].Stats().Node.Retried
			// Cut off, and every frame to or from it lost (not held back
			// and delivered after the heal).
			host := clustertest.Host(writer + 1)
			lc.freeze(writer)
			lc.net.SetFaults(memnet.Faults{DropRate: 1, Match: func(tr memnet.Traffic) bool {
				return tr.Kind == memnet.Frame && (tr.From == host || tr.To == host)
			}})
			page.v.Add(1)
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := lc.caches[writer].UpdateSpaces(wctx, update)
			cancel()
			if err == nil {
				t.Fatal("an update from a node cut off from every other was acknowledged")
			}
			lc.net.SetFaults(memnet.Faults{})
			lc.thaw(writer)
			for i, q := range qs {
				if i == writer {
					continue
				}
				testkit.Eventually(t, 30*time.Second, fmt.Sprintf("node %d's result of version %d", i+1, page.v.Load()), func() bool {
					v, err := q.GetQuery(ctx, key, spaces, page.load)
					return err == nil && page.is(v)
				})
			}
			// (A node's result may also be gone because its partition moved
			// while the writer was cut off: the update must get through
			// regardless.)
			testkit.Eventually(t, 30*time.Second, "the update sent again", func() bool {
				return lc.caches[writer].Stats().Node.Retried > retried
			})
		}
	})
}
