// Package clustertest starts in-process clusters for other packages'
// tests: real memberlist, peer RPC and bus, over an in-memory network
// (package memnet) that the test can fault and partition.
package clustertest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// Host is the memnet host of node i (1-based): 10.0.0.i.
func Host(i int) string { return fmt.Sprintf("10.0.0.%d", i) }

// Start starts n nodes named n1..nN on net, each on Host(i), with the
// loopback preset tightened for tests; tweak, if set, adjusts each config.
// It joins them and waits until every node sees all n alive. The nodes are
// closed when the test ends.
func Start(t testing.TB, net *memnet.Network, n int, tweak func(*cluster.Config)) []*cluster.Node {
	t.Helper()
	nodes := make([]*cluster.Node, 0, n)
	for i := 1; i <= n; i++ {
		nodes = append(nodes, StartNode(t, net, i, tweak))
	}
	for _, nd := range nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := nd.Join(ctx, []string{nodes[0].GossipAddr()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes {
		WaitAlive(t, nd, n)
	}
	return nodes
}

// StartNode starts node i alone.
func StartNode(t testing.TB, net *memnet.Network, i int, tweak func(*cluster.Config)) *cluster.Node {
	t.Helper()
	host := net.Host(Host(i))
	tr, err := host.Transport(7946)
	if err != nil {
		t.Fatal(err)
	}
	cfg := *cluster.DefaultLoopbackConfig()
	ml := *cfg.Memberlist
	ml.PushPullInterval = 300 * time.Millisecond
	// A probe answered within half a second: the loopback preset's 100 ms
	// declares a node that waited that long for a CPU failed, on the
	// loaded 2-core machines the tests run on.
	ml.ProbeInterval, ml.ProbeTimeout = time.Second, 500*time.Millisecond
	cfg.Memberlist = &ml
	cfg.Name = fmt.Sprintf("n%d", i)
	cfg.Transport, cfg.Network, cfg.RPCAddr = tr, host, Host(i)+":7947"
	cfg.GapTimeout, cfg.ReconnectInterval = time.Second, 200*time.Millisecond
	cfg.Logger = testkit.Logger(t).With("node", cfg.Name)
	if tweak != nil {
		tweak(&cfg)
	}
	nd, err := cluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Close() })
	return nd
}

// WaitAlive waits until nd sees n alive members.
func WaitAlive(t testing.TB, nd *cluster.Node, n int) {
	t.Helper()
	deadline := time.Now().Add(testkit.MinWait)
	for {
		alive := slices.DeleteFunc(nd.Members(), func(m cluster.Member) bool { return m.State != cluster.StateAlive })
		if len(alive) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %d alive members, want %d", nd.Name(), len(alive), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RaftConfig is the raft timing of the members' stores: the loopback
// preset's, with timeouts sized for a loaded machine (2 shared cores, load
// averages above 10), so that a leader is not deposed because it waited
// for a CPU; a killed or frozen leader is still replaced within seconds.
func RaftConfig() *raft.Config {
	c := cp.LoopbackRaftConfig()
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
	return c
}

// Member is a node with its share of the consistent store.
type Member struct {
	Node  *cluster.Node
	Store *cp.Store
	Raft  *raft.InmemTransport
}

// StartWithStores starts n nodes as Start does, each with a consistent
// store over raft's in-memory transport (all connected), bootstrapped with
// n expected members, and waits for a leader. Everything is closed when
// the test ends.
func StartWithStores(t testing.TB, net *memnet.Network, n int) []*Member {
	t.Helper()
	return StartWithStoresMode(t, net, n, cluster.CacheModeLocal)
}

// StartWithStoresMode is StartWithStores with the members' cache mode.
func StartWithStoresMode(t testing.TB, net *memnet.Network, n int, mode string) []*Member {
	t.Helper()
	members := make([]*Member, n)
	for i := range members {
		addr, trans := raft.NewInmemTransport(raft.ServerAddress(Host(i+1) + ":7948"))
		members[i] = &Member{Raft: trans}
		members[i].Node = StartNode(t, net, i+1, func(c *cluster.Config) { c.RaftAddr, c.CacheMode = string(addr), mode })
	}
	for _, a := range members {
		for _, b := range members {
			if a != b {
				a.Raft.Connect(b.Raft.LocalAddr(), b.Raft)
			}
		}
	}
	for _, m := range members[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := m.Node.Join(ctx, []string{members[0].Node.GossipAddr()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range members {
		WaitAlive(t, m.Node, n)
		s, err := cp.Open(cp.Config{
			Node: m.Node, Transport: m.Raft, BootstrapExpect: n, ReconcileInterval: 100 * time.Millisecond,
			Raft: RaftConfig(), Logger: testkit.Logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		m.Store = s
		t.Cleanup(func() { s.Close(); m.Raft.Close() })
	}
	deadline := time.Now().Add(testkit.MinWait)
	for {
		for _, m := range members {
			if m.Store.Status().Role == "leader" {
				return members
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no raft leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AddMember starts node i with a store that joins the existing group (no
// bootstrap): it joins gossip through members[0]'s node, connects raft's
// in-memory transport both ways with every member given, and waits until
// it sees alive members.
func AddMember(t testing.TB, net *memnet.Network, members []*Member, i int) *Member {
	t.Helper()
	addr, trans := raft.NewInmemTransport(raft.ServerAddress(Host(i) + ":7948"))
	m := &Member{Raft: trans}
	mode := members[0].Node.Self().CacheMode
	m.Node = StartNode(t, net, i, func(c *cluster.Config) { c.RaftAddr, c.CacheMode = string(addr), mode })
	for _, o := range members {
		trans.Connect(o.Raft.LocalAddr(), o.Raft)
		o.Raft.Connect(addr, trans)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Node.Join(ctx, []string{members[0].Node.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	s, err := cp.Open(cp.Config{
		Node: m.Node, Transport: trans, ReconcileInterval: 100 * time.Millisecond,
		Raft: RaftConfig(), Logger: testkit.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Store = s
	t.Cleanup(func() { s.Close(); trans.Close() })
	return m
}

// Kill stops a member abruptly: its store, its node (without leaving) and
// its raft transport.
func (m *Member) Kill() {
	m.Store.Close()
	m.Node.Kill()
	m.Raft.Close()
}
