package cluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func testKey(t testing.TB, b byte, n int) []byte {
	t.Helper()
	return bytes.Repeat([]byte{b}, n)
}

func encryptedNode(t testing.TB, name string, key []byte) *Node {
	t.Helper()
	cfg := fastLoopback(t, name)
	cfg.GossipKey = key
	return startNode(t, cfg)
}

func TestDecodeGossipKey(t *testing.T) {
	for _, c := range []struct {
		in, err string
		n       int
	}{
		{EncodeGossipKey(make([]byte, 16)), "", 16},
		{EncodeGossipKey(make([]byte, 24)), "", 24},
		{" " + EncodeGossipKey(make([]byte, 32)) + "\n", "", 32},
		{EncodeGossipKey(make([]byte, 31)), "16, 24 or 32 bytes", 0},
		{EncodeGossipKey(make([]byte, 64)), "16, 24 or 32 bytes", 0},
		{"not base64!", "not base64", 0},
		{"", "16, 24 or 32 bytes", 0},
	} {
		k, err := DecodeGossipKey(c.in)
		if c.err == "" {
			if err != nil || len(k) != c.n {
				t.Errorf("%q: %d bytes, %v; want %d bytes", c.in, len(k), err, c.n)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: err %v, want one saying %q", c.in, err, c.err)
		}
	}
	cfg := fastLoopback(t, "x")
	cfg.GossipKey = make([]byte, 7)
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "\x00") {
		t.Errorf("Validate of a 7-byte key: %v", err)
	}
}

// A node without the cluster's key, or with another key, cannot join an
// encrypted cluster over real memberlist sockets, and the members count
// the refusal; a node with the key joins.
func TestGossipKeyKeepsOutsidersOut(t *testing.T) {
	key := testKey(t, 1, 32)
	a := encryptedNode(t, "a", key)
	for _, c := range []struct {
		name string
		key  []byte
	}{{"plain", nil}, {"wrongkey", testKey(t, 2, 32)}} {
		out := encryptedNode(t, c.name, c.key)
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		_, err := out.Join(ctx, []string{a.GossipAddr()})
		cancel()
		if err == nil {
			t.Fatalf("%s joined an encrypted cluster", c.name)
		}
		if _, ok := a.Member(c.name); ok {
			t.Fatalf("a knows %s as a member", c.name)
		}
		if _, ok := out.Member("a"); ok {
			t.Fatalf("%s knows a as a member", c.name)
		}
	}
	if got := a.Refusals().Get(ListenerGossip, ReasonNotEncrypted); got == 0 {
		t.Fatal("a counted no refusal of plaintext gossip")
	}
	if got := a.Refusals().Get(ListenerGossip, ReasonUnknownKey); got == 0 {
		t.Fatal("a counted no refusal of gossip under another key")
	}
	b := encryptedNode(t, "b", key)
	join(t, b, a)
	testkit.Eventually(t, 10*time.Second, "a and b alive on both", func() bool { return aliveNames(a) == "a,b" && aliveNames(b) == "a,b" })
	// A node without a key cannot be joined by an encrypted one either.
	plain := encryptedNode(t, "plain2", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := b.Join(ctx, []string{plain.GossipAddr()}); err == nil {
		t.Fatal("an encrypted node joined a plain one")
	}
}

// memberlist's RemoveKey shifts the keys after the one removed within the
// array its readers iterate; removeKey must leave an array that was read
// before untouched, and the keyring in the right order.
func TestRemoveKeyLeavesReadersArrayAlone(t *testing.T) {
	k := func(b byte) []byte { return testKey(t, b, 16) }
	kr, err := memberlist.NewKeyring([][]byte{k(2), k(3), k(4)}, k(1))
	if err != nil {
		t.Fatal(err)
	}
	held := kr.GetKeys() // what a decryption in flight iterates
	before := make([][]byte, len(held))
	copy(before, held)
	if err := removeKey(kr, held, 2); err != nil { // k(3), in the middle
		t.Fatal(err)
	}
	for i := range held {
		if !bytes.Equal(held[i], before[i]) {
			t.Fatalf("the array a reader held changed at %d", i)
		}
	}
	got := kr.GetKeys()
	want := [][]byte{k(1), k(2), k(4)}
	if len(got) != len(want) {
		t.Fatalf("%d keys after remove, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("key %d is %x, want %x", i, got[i][0], want[i][0])
		}
	}
}

// failCounter counts fail events seen by a node.
func failCounter(t *testing.T, n *Node) *atomic.Int64 {
	var fails atomic.Int64
	sub := n.Subscribe()
	t.Cleanup(func() { sub.Close() })
	go func() {
		for e := range sub.C() {
			if e.Type == EventFail || e.Type == EventLeave {
				fails.Add(1)
				t.Logf("%s saw %s %s", n.Name(), e.Type, e.Member.Name)
			}
		}
	}()
	return &fails
}

// A key rotation on a running 3-node cluster under bus load: install,
// use, remove, each applied on every member through one node, with no
// member marked failed; afterwards only the new key gets in, and the
// keyring files hold it.
func TestKeyringRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := testKey(t, 1, 32), testKey(t, 2, 16)
	var nodes []*Node
	for _, name := range []string{"a", "b", "c"} {
		cfg := fastLoopback(t, name)
		cfg.GossipKey = oldKey
		cfg.KeyringFile = filepath.Join(dir, name+".keyring")
		// The failure detector must not be at the edge of a loaded
		// machine's stalls: a failure here must be the rotation's doing.
		ml := *cfg.Memberlist
		ml.ProbeInterval, ml.ProbeTimeout, ml.SuspicionMult = 500*time.Millisecond, 250*time.Millisecond, 4
		cfg.Memberlist = &ml
		nodes = append(nodes, startNode(t, cfg))
	}
	for _, n := range nodes[1:] {
		join(t, n, nodes[0])
	}
	for _, n := range nodes {
		testkit.Eventually(t, 15*time.Second, n.Name()+" sees 3 alive", func() bool { return aliveNames(n) == "a,b,c" })
	}
	var fails []*atomic.Int64
	recs := make([]*recorder, len(nodes))
	for i, n := range nodes {
		fails = append(fails, failCounter(t, n))
		recs[i] = &recorder{}
		cancel := n.Bus().Subscribe("load", recs[i])
		t.Cleanup(cancel)
	}
	// Load: every node publishes continuously while the keys rotate.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var published atomic.Int64
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if n.Bus().Publish("load", []byte("x")) == nil {
					published.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	step := func(via *Node, op string, key []byte) {
		t.Helper()
		res, err := via.Keyring(ctx, op, key)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if len(res) != 3 {
			t.Fatalf("%s: %d results, want 3: %+v", op, len(res), res)
		}
		for _, r := range res {
			if r.Error != "" {
				t.Fatalf("%s on %s: %s", op, r.Node, r.Error)
			}
		}
		// Let gossip run under the new state for a few probe rounds.
		time.Sleep(1500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	step(nodes[0], KeyringInstall, newKey)
	step(nodes[1], KeyringUse, newKey)
	step(nodes[2], KeyringRemove, oldKey)
	close(stop)
	wg.Wait()
	res, err := nodes[0].Keyring(ctx, KeyringList, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Error != "" || r.Keyring.Primary != EncodeGossipKey(newKey) || len(r.Keyring.Keys) != 1 {
			t.Fatalf("%s after the rotation: %+v", r.Node, r)
		}
	}
	for i, f := range fails {
		if got := f.Load(); got != 0 {
			t.Fatalf("%s saw %d members fail or leave during the rotation", nodes[i].Name(), got)
		}
	}
	for _, n := range nodes {
		keys, err := readKeyring(filepath.Join(dir, n.Name()+".keyring"))
		if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], newKey) {
			t.Fatalf("%s's keyring file: %d keys, %v", n.Name(), len(keys), err)
		}
		if st, err := os.Stat(filepath.Join(dir, n.Name()+".keyring")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s's keyring file mode: %v %v", n.Name(), st.Mode(), err)
		}
	}
	t.Logf("%d bus messages published during the rotation", published.Load())
	// Every node still hears every other over the bus.
	testkit.Eventually(t, 10*time.Second, "bus traffic after the rotation", func() bool {
		for _, r := range recs {
			if m, _ := r.counts(); m == 0 {
				return false
			}
		}
		return true
	})
	// The old key no longer gets in; the new one does.
	stale := encryptedNode(t, "stale", oldKey)
	jctx, jcancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer jcancel()
	if _, err := stale.Join(jctx, []string{nodes[0].GossipAddr()}); err == nil {
		t.Fatal("a node with the removed key joined")
	}
	fresh := encryptedNode(t, "fresh", newKey)
	join(t, fresh, nodes[1])
}

// The keyring file wins over the gossip key at a restart, and turns
// encryption on by itself.
func TestKeyringFileSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.keyring")
	k1, k2 := testKey(t, 1, 32), testKey(t, 2, 32)
	cfg := fastLoopback(t, "a")
	cfg.GossipKey, cfg.KeyringFile = k1, path
	a, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, op := range []string{KeyringInstall, KeyringUse} {
		if res, err := a.Keyring(ctx, op, k2); err != nil || res[0].Error != "" {
			t.Fatalf("%s: %v %+v", op, err, res)
		}
	}
	a.Close()
	cfg.GossipKey = nil
	a2 := startNode(t, cfg)
	res, err := a2.Keyring(ctx, KeyringList, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := res[0].Keyring; st.Primary != EncodeGossipKey(k2) || len(st.Keys) != 2 {
		t.Fatalf("after restart: %+v", st)
	}
	// A plain node has no keyring to change.
	plain := startNode(t, fastLoopback(t, "p"))
	if _, err := plain.Keyring(ctx, KeyringList, nil); !errors.Is(err, ErrNoEncryption) {
		t.Fatalf("keyring of a plain node: %v", err)
	}
	// Refusals of the local operations are errors, per node.
	for _, c := range []struct {
		op   string
		key  []byte
		want error
	}{{KeyringRemove, k2, ErrPrimaryKey}, {KeyringUse, testKey(t, 9, 16), ErrKeyNotInstalled}} {
		res, err := a2.Keyring(ctx, c.op, c.key)
		if err != nil || res[0].Error != c.want.Error() {
			t.Fatalf("%s: %v %+v, want %v", c.op, err, res, c.want)
		}
	}
}

// A keyring operation not sealed under one of the member's keys is
// refused and counted, whoever sends it over the peer RPC.
func TestKeyringOperationMustBeSealed(t *testing.T) {
	key := testKey(t, 1, 32)
	a := encryptedNode(t, "a", key)
	b := encryptedNode(t, "b", key)
	join(t, b, a)
	testkit.Eventually(t, 10*time.Second, "a sees b", func() bool { return aliveNames(a) == "a,b" })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	other, _ := sealKeyring(testKey(t, 7, 32), []byte("anything"))
	for _, body := range [][]byte{[]byte("plain"), other} {
		if _, err := b.RPC().Call(ctx, "a", rpcKeyring, body); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("unsealed keyring operation: %v", err)
		}
	}
	if got := a.Refusals().Get(ListenerKeyring, ReasonUnsealed); got != 2 {
		t.Fatalf("keyring refusals counted: %d, want 2", got)
	}
}
