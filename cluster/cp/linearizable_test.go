package cp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// The register model: one key's value and version. A CAS whose outcome is
// unknown sets VersionUnknown; the next read that sees its value adopts
// the version it reports.
type regState struct {
	Exists         bool
	Value          string
	Version        uint64
	VersionUnknown bool
}

type regInput struct {
	Key    string
	IsCAS  bool
	Expect uint64
	Value  string
}

type regOutput struct {
	Found    bool
	Value    string
	Version  uint64
	OK       bool // CAS applied
	Mismatch bool // CAS refused
	Unknown  bool // CAS outcome unknown
}

var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(regInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(st, in, out any) (bool, any) {
		s, i, o := st.(regState), in.(regInput), out.(regOutput)
		if !i.IsCAS {
			if o.Found != s.Exists || o.Value != s.Value {
				return false, s
			}
			if s.VersionUnknown {
				s.Version, s.VersionUnknown = o.Version, false
				return true, s
			}
			return o.Version == s.Version, s
		}
		matches := s.VersionUnknown || s.Version == i.Expect
		switch {
		case o.OK:
			if !matches || (!s.VersionUnknown && o.Version <= s.Version) {
				return false, s
			}
			return true, regState{Exists: true, Value: i.Value, Version: o.Version}
		case o.Mismatch:
			return s.VersionUnknown || s.Version != i.Expect, s
		default: // unknown: if it could apply, assume it did
			if !matches {
				return true, s
			}
			return true, regState{Exists: true, Value: i.Value, VersionUnknown: true}
		}
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(regInput), out.(regOutput)
		if i.IsCAS {
			return fmt.Sprintf("cas(%s, %d, %s) -> ok=%v mismatch=%v unknown=%v v=%d", i.Key, i.Expect, i.Value, o.OK, o.Mismatch, o.Unknown, o.Version)
		}
		return fmt.Sprintf("get(%s) -> %v %q v=%d", i.Key, o.Found, o.Value, o.Version)
	},
}

// The checker must catch a stale read, or a passing run proves nothing.
func TestRegisterModelCatchesViolations(t *testing.T) {
	cas := regInput{Key: "k", IsCAS: true, Expect: 0, Value: "a"}
	get := regInput{Key: "k"}
	ok := []porcupine.Operation{
		{ClientId: 0, Input: cas, Call: 0, Output: regOutput{OK: true, Version: 5}, Return: 10},
		{ClientId: 1, Input: get, Call: 11, Output: regOutput{Found: true, Value: "a", Version: 5}, Return: 12},
	}
	if !porcupine.CheckOperations(registerModel, ok) {
		t.Fatal("a linearizable history was rejected")
	}
	stale := []porcupine.Operation{
		ok[0],
		{ClientId: 1, Input: get, Call: 11, Output: regOutput{Found: false}, Return: 12},
	}
	if porcupine.CheckOperations(registerModel, stale) {
		t.Fatal("a read that missed a completed write was accepted")
	}
	lostUnknown := []porcupine.Operation{ // an unknown CAS may or may not apply
		{ClientId: 0, Input: cas, Call: 0, Output: regOutput{Unknown: true}, Return: math.MaxInt64},
		{ClientId: 1, Input: get, Call: 11, Output: regOutput{Found: false}, Return: 12},
		{ClientId: 1, Input: get, Call: 13, Output: regOutput{Found: true, Value: "a", Version: 9}, Return: 14},
	}
	if !porcupine.CheckOperations(registerModel, lostUnknown) {
		t.Fatal("an unknown CAS that applied late was rejected")
	}
}

// lnode is a node of the linearizability test: memnet for gossip and RPC,
// raft's in-memory transport for raft, so both can be partitioned.
type lnode struct {
	host  string
	node  *cluster.Node
	trans *raft.InmemTransport
	store *Store
}

type lcluster struct {
	net   *memnet.Network
	nodes []*lnode
}

func startLCluster(t *testing.T) *lcluster {
	lc := &lcluster{net: memnet.New(11)}
	t.Cleanup(func() { lc.net.Close() })
	for i := 1; i <= 3; i++ {
		host := fmt.Sprintf("10.0.1.%d", i)
		h := lc.net.Host(host)
		tr, err := h.Transport(7946)
		if err != nil {
			t.Fatal(err)
		}
		raddr, rtrans := raft.NewInmemTransport(raft.ServerAddress(host + ":7948"))
		cfg := *cluster.DefaultLoopbackConfig()
		cfg.Name, cfg.Transport, cfg.Network, cfg.RPCAddr = fmt.Sprintf("n%d", i), tr, h, host+":7947"
		cfg.RaftAddr, cfg.Logger = string(raddr), testLogger(t).With("node", cfg.Name)
		node, err := cluster.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln := &lnode{host: host, node: node, trans: rtrans}
		t.Cleanup(func() { ln.stop() })
		lc.nodes = append(lc.nodes, ln)
	}
	for _, a := range lc.nodes {
		for _, b := range lc.nodes {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	for _, n := range lc.nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := n.node.Join(ctx, []string{lc.nodes[0].node.GossipAddr()}); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	for _, n := range lc.nodes {
		var err error
		n.store, err = Open(Config{
			Node: n.node, Transport: n.trans, BootstrapExpect: 3, VoterGrace: time.Hour,
			ReconcileInterval: 100 * time.Millisecond, Raft: LoopbackRaftConfig(), Logger: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return lc
}

func (n *lnode) stop() {
	if n.store != nil {
		n.store.Close()
	}
	n.node.Kill()
	n.trans.Close()
}

// cut disconnects a node's raft transport from the others in both
// directions and isolates its host for gossip and RPC; heal undoes it.
func (lc *lcluster) cut(victim *lnode) {
	lc.net.Isolate(victim.host)
	for _, o := range lc.nodes {
		if o != victim {
			victim.trans.Disconnect(o.trans.LocalAddr())
			o.trans.Disconnect(victim.trans.LocalAddr())
		}
	}
}

func (lc *lcluster) heal(victim *lnode) {
	lc.net.Heal()
	for _, o := range lc.nodes {
		if o != victim {
			victim.trans.Connect(o.trans.LocalAddr(), o.trans)
			o.trans.Connect(victim.trans.LocalAddr(), victim.trans)
		}
	}
}

func (lc *lcluster) leader(t *testing.T) *lnode {
	var l *lnode
	testkit.Eventually(t, 30*time.Second, "a leader", func() bool {
		for _, n := range lc.nodes {
			if n.store.raft.State() == raft.Leader {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// history records operations with a shared clock.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	cas   int // applied CAS in ops
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	if op.Input.(regInput).IsCAS && op.Output.(regOutput).OK {
		h.cas++
	}
	h.mu.Unlock()
}

// applied is the number of CAS recorded as applied so far.
func (h *history) applied() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cas
}

// Concurrent CompareAndSet and Get from four clients on three nodes, while
// the leader is killed and then one of the survivors is cut off and healed:
// the history must be linearizable.
func TestLinearizableUnderFailures(t *testing.T) {
	lc := startLCluster(t)
	first := lc.leader(t)
	h := &history{start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runClient(c, lc.nodes[c%3], h, stop)
		}()
	}
	// Each phase lasts until the clients have made progress in it (some
	// CAS applied), however slowly a loaded machine runs them.
	progress := func(n int, what string) {
		t.Helper()
		from := h.applied()
		testkit.Eventually(t, 2*time.Minute, fmt.Sprintf("%d more CAS applied %s", n, what), func() bool { return h.applied() >= from+n })
	}
	progress(30, "before the leader dies")
	first.stop() // the leader dies
	var survivors []*lnode
	for _, n := range lc.nodes {
		if n != first {
			survivors = append(survivors, n)
		}
	}
	progress(30, "under the new leader")
	victim := survivors[1]
	lc.cut(victim) // no quorum for a while: operations stall or fail
	time.Sleep(time.Second)
	lc.heal(victim)
	progress(40, "after the heal")
	close(stop)
	wg.Wait()

	var cas, ok int
	for _, op := range h.ops {
		if op.Input.(regInput).IsCAS {
			cas++
			if op.Output.(regOutput).OK {
				ok++
			}
		}
	}
	t.Logf("history: %d operations, %d CAS of which %d applied", len(h.ops), cas, ok)
	if ok < 100 {
		t.Fatalf("only %d CAS applied: the test exercised too little", ok)
	}
	res := porcupine.CheckOperationsTimeout(registerModel, h.ops, time.Minute)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		t.Fatalf("the history of %d operations is NOT linearizable", len(h.ops))
	default:
		t.Fatalf("the checker could not decide within a minute (%d operations)", len(h.ops))
	}
}

// runClient alternates reads and compare-and-sets on three keys through one
// node until stop, recording every operation whose outcome is known, and
// every CAS whose outcome is not as never returning. It starts an
// operation every 3 ms at most: the checker's work grows steeply with the
// operations that overlap an unknown one, and a few thousand operations
// across the faults are plenty.
func runClient(id int, n *lnode, h *history, stop chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(id), 99))
	versions := map[string]uint64{}
	pace := time.NewTicker(3 * time.Millisecond)
	defer pace.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		key := fmt.Sprintf("k%d", rng.IntN(3))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		call := h.now()
		if rng.IntN(2) == 0 {
			read := n.store.Get
			if rng.IntN(2) == 0 {
				// Half the reads are patient: confirmed by raft's own
				// heartbeats rather than a leadership check of their own.
				read = func(ctx context.Context, key string) (KV, error) { return patientGet(ctx, n.store, key) }
			}
			kv, err := read(ctx, key)
			ret := h.now()
			cancel()
			switch {
			case err == nil:
				versions[key] = kv.Version
				h.add(porcupine.Operation{ClientId: id, Input: regInput{Key: key}, Call: call, Return: ret,
					Output: regOutput{Found: true, Value: string(kv.Value), Version: kv.Version}})
			case errors.Is(err, ErrNotFound):
				versions[key] = 0
				h.add(porcupine.Operation{ClientId: id, Input: regInput{Key: key}, Call: call, Return: ret, Output: regOutput{}})
			}
			// A failed read changed nothing: it is left out.
			continue
		}
		in := regInput{Key: key, IsCAS: true, Expect: versions[key], Value: fmt.Sprintf("c%d-%d", id, seq)}
		v, err := n.store.CompareAndSet(ctx, key, in.Expect, []byte(in.Value))
		ret := h.now()
		cancel()
		switch {
		case err == nil:
			versions[key] = v
			h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Return: ret, Output: regOutput{OK: true, Version: v}})
		case errors.Is(err, ErrVersionMismatch):
			h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Return: ret, Output: regOutput{Mismatch: true}})
		case errors.Is(err, ErrNoLeader), errors.Is(err, ErrClosed):
			// Never applied: every attempt was refused before the log.
		default:
			h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Return: math.MaxInt64, Output: regOutput{Unknown: true}})
		}
	}
}

// patientGet reads key with ListPatient (the keys here prefix no other).
func patientGet(ctx context.Context, s *Store, key string) (KV, error) {
	kvs, err := s.ListPatient(ctx, key)
	if err != nil {
		return KV{}, err
	}
	for _, kv := range kvs {
		if kv.Key == key {
			return kv, nil
		}
	}
	return KV{}, ErrNotFound
}
