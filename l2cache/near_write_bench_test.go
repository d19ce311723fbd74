package l2cache

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// tcpLeasedCluster starts n nodes over loopback sockets (memberlist, peer
// RPC and raft all TCP) with read leases and caches of mode, as nodes
// run, and waits until every cache can serve.
func tcpLeasedCluster(b *testing.B, n int, mode string) []*Cache {
	b.Helper()
	return tcpCluster(b, n, mode, true)
}

// tcpCluster starts n nodes over loopback sockets (memberlist, peer RPC
// and raft all TCP) with caches of mode, each with a read lease if leased,
// and waits until every node has every node in its partition table (and,
// leased, until every cache can serve).
func tcpCluster(b *testing.B, n int, mode string, leased bool) []*Cache {
	b.Helper()
	var nodes []*cluster.Node
	var caches []*Cache
	for i := 1; i <= n; i++ {
		trans, err := cp.NewTCPTransport("127.0.0.1:0", "", testkit.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		cfg := *cluster.DefaultLoopbackConfig()
		cfg.Name, cfg.RaftAddr, cfg.Logger = fmt.Sprintf("n%d", i), string(trans.LocalAddr()), testkit.Logger(b)
		cfg.CacheMode = mode
		nd, err := cluster.Start(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if i > 1 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := nd.Join(ctx, []string{nodes[0].GossipAddr()})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
		nodes = append(nodes, nd)
		st, err := cp.Open(cp.Config{Node: nd, Transport: trans, BootstrapExpect: 3, Raft: cp.LoopbackRaftConfig(), Logger: testkit.Logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		k, err := NewTableKeeper(TableConfig{Node: nd, Store: st, Backups: 1, Interval: 100 * time.Millisecond, Logger: testkit.Logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		ccfg := Config{Mode: mode, Node: nd, Keeper: k, Bus: nd.Bus()}
		if leased {
			if ccfg.Lease, err = NewReadLease(LeaseConfig{Name: nd.Name(), Store: st, Duration: testLease, Logger: testkit.Logger(b)}); err != nil {
				b.Fatal(err)
			}
		}
		b.Cleanup(func() {
			if ccfg.Lease != nil {
				ccfg.Lease.Close()
			}
			k.Close()
			st.Close()
			nd.Close()
			trans.Close()
		})
		caches = append(caches, newLocal(b, ccfg))
	}
	for i, c := range caches {
		testkit.Eventually(b, 60*time.Second, fmt.Sprintf("node %d's cache ready with every node in its table", i+1), func() bool {
			return (!leased || c.Ready() == nil) && len(tableMembers(distOf(c).keeper.Table())) == n
		})
	}
	return caches
}

// BenchmarkNearWrite measures what a read-write update's cache work costs
// the cluster in NEAR mode at 6 nodes over loopback sockets, by the ways
// its query-space update has travelled: on the bus ("bus", before
// syncSpaces), straight to each lease holder ("direct"), and riding on
// the unlock's own messages ("carried", Region.Unlock with spaces), and,
// for a keyed space, through the space's owner alongside the unlock
// ("keyed-all": every node has read a result over the space, so the owner
// sends it on to all of them; "keyed-one": one node other than the owner
// and the writer has). Each write soft-locks a hot key, unlocks it and
// marks a query space updated; before each, every node reads the key and
// a query result over the space (so every node is a near holder, and has
// a result to drop).
// The contenders alternate in one loop; each reports the messages sent
// (peer RPC calls and one-way notes, all nodes) and the process CPU time
// (all six nodes are this process) per write.
func BenchmarkNearWrite(b *testing.B) {
	caches := tcpLeasedCluster(b, 6, cluster.CacheModeNear)
	ctx := context.Background()
	rs, qs := make([]*Region, len(caches)), make([]*Region, len(caches))
	for i, c := range caches {
		rs[i] = region(b, c, "pr", ReadWrite)
		var err error
		if qs[i], err = c.Region("q", QueryRegion, NonstrictReadWrite); err != nil {
			b.Fatal(err)
		}
	}
	// A key whose owner and backup are other nodes than the writer's.
	d := distOf(caches[0])
	key := ""
	for k := 0; key == ""; k++ {
		if r := d.keeper.Table().Replicas[d.partition("pr", strconv.Itoa(k))]; len(r) == 2 && r[0] != d.self && r[1] != d.self {
			key = strconv.Itoa(k)
		}
	}
	spaces := []string{"comments"}
	value := func(context.Context) ([]byte, error) { return []byte("row"), nil }
	// A keyed space whose owner is neither the writer nor node 2, the
	// one reader of "keyed-one".
	keyed := ""
	for i := 0; keyed == ""; i++ {
		s := KeyedSpace(fmt.Sprint("comments/", i))
		if o := d.keeper.Table().Owner(d.partition("", s)); o != d.self && o != caches[1].cfg.Node.Name() {
			keyed = s
		}
	}
	keyedQuery, keyedSpaces := "open:"+keyed, []string{"comments", keyed}
	readAll := func(keyedReaders []int) {
		for i := range caches {
			if _, err := rs[i].Get(ctx, key, value); err != nil {
				b.Fatal(err)
			}
			if _, err := qs[i].GetQuery(ctx, "open", spaces, value); err != nil {
				b.Fatal(err)
			}
		}
		for _, i := range keyedReaders {
			if _, err := qs[i].GetQuery(ctx, keyedQuery, keyedSpaces, value); err != nil {
				b.Fatal(err)
			}
		}
	}
	messages := func() (n uint64) {
		for _, c := range caches {
			st := c.cfg.Node.RPC().Stats()
			n += st.Calls.Load() + st.NotifySent.Load()
		}
		return n
	}
	w := rs[0]
	type contender struct {
		name      string
		run       func() error
		readers   []int // the nodes that read the keyed query before the write
		msgs, cpu float64
	}
	lockUnlockUpdate := func() error {
		if err := w.Lock(ctx, key); err != nil {
			return err
		}
		if err := w.Unlock(ctx, key); err != nil {
			return err
		}
		return caches[0].UpdateSpaces(ctx, spaces...)
	}
	cs := []*contender{
		{name: "bus", run: func() error {
			testSpacesOnBus.Store(true)
			defer testSpacesOnBus.Store(false)
			return lockUnlockUpdate()
		}},
		{name: "direct", run: lockUnlockUpdate},
		{name: "carried", run: func() error {
			if err := w.Lock(ctx, key); err != nil {
				return err
			}
			return w.Unlock(ctx, key, spaces...)
		}},
	}
	keyedUnlock := func() error {
		if err := w.Lock(ctx, key); err != nil {
			return err
		}
		return w.Unlock(ctx, key, keyed)
	}
	cs = append(cs,
		&contender{name: "keyed-all", run: keyedUnlock, readers: []int{0, 1, 2, 3, 4, 5}},
		&contender{name: "keyed-one", run: keyedUnlock, readers: []int{1}})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range cs {
			c := cs[(i+j)%len(cs)]
			readAll(c.readers)
			for _, cc := range caches {
				cc.waitLocal() // the near copies' sets have landed
			}
			m0, t0 := messages(), cpuTime(b)
			if err := c.run(); err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			c.cpu += float64(cpuTime(b) - t0)
			c.msgs += float64(messages() - m0)
		}
	}
	b.StopTimer()
	for _, c := range cs {
		b.ReportMetric(c.msgs/float64(b.N), "msgs/write-"+c.name)
		b.ReportMetric(c.cpu/float64(b.N)/1e3, "cpu-µs/write-"+c.name)
	}
}

// cpuTime is the process's CPU time (user and system), in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
