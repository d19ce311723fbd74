package cp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// TestSnapshotAndRestoreInProcess: a snapshot is refused off the leader,
// taken on it, restored onto another group (watches see the change), and
// versions move on past the restored ones.
func TestSnapshotAndRestoreInProcess(t *testing.T) {
	src := &testCluster{t: t, expect: 3}
	for i := 1; i <= 3; i++ {
		src.add(fmt.Sprintf("s%d", i), "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader := src.leader()
	for i := range 20 {
		if _, err := leader.store.Put(ctx, fmt.Sprintf("k/%02d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range src.members {
		if m != leader {
			if _, err := m.store.Snapshot(ctx, &bytes.Buffer{}); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("Snapshot on a follower = %v, want ErrNotLeader", err)
			}
			break
		}
	}
	var file bytes.Buffer
	info, err := leader.store.Snapshot(ctx, &file)
	if err != nil || info.Keys != 20 {
		t.Fatalf("Snapshot: %+v, %v", info, err)
	}

	dst := &testCluster{t: t, expect: 1}
	m := dst.add("d1", t.TempDir())
	dl := dst.leader()
	if _, err := dl.store.Put(ctx, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	w := m.store.Watch("")
	defer w.Close()
	if _, err := dl.store.Restore(ctx, bytes.NewReader(file.Bytes())); err != nil {
		t.Fatal(err)
	}
	list, err := dl.store.List(ctx, "")
	if err != nil || len(list) != 20 {
		t.Fatalf("after the restore: %d keys, %v", len(list), err)
	}
	seen := map[string]bool{}
	testkit.Eventually(t, 10*time.Second, "the watch to see the restore", func() bool {
		for {
			select {
			case e := <-w.C():
				seen[fmt.Sprintf("%s deleted=%v", e.Key, e.Deleted)] = true
			default:
				return seen["other deleted=true"] && seen["k/19 deleted=false"]
			}
		}
	})
	v, err := dl.store.Put(ctx, "after", nil)
	if err != nil || v <= info.Index {
		t.Fatalf("a write after the restore got version %d (%v), want above %d", v, err, info.Index)
	}
}

func TestDecodeSnapshotRefusesDamage(t *testing.T) {
	st := snapshotState{Data: map[string]entry{"a": {Value: []byte("1"), Version: 7}}}
	good, err := encodeSnapshot(SnapshotInfo{Index: 9, Keys: 1}, &st)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := DecodeSnapshot(good); err != nil {
		t.Fatalf("a good snapshot: %v", err)
	}
	flipped := bytes.Clone(good)
	flipped[20] ^= 1
	past, _ := encodeSnapshot(SnapshotInfo{Index: 3}, &st)
	for name, b := range map[string][]byte{
		"empty": nil, "truncated": good[:len(good)-1], "a flipped byte": flipped,
		"versions past its index": past, "not a snapshot": []byte("hello, this is not a snapshot file at all, no no no"),
	} {
		if _, _, err := DecodeSnapshot(b); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: %v, want ErrBadSnapshot", name, err)
		}
	}
}

func FuzzDecodeSnapshot(f *testing.F) {
	st := snapshotState{Data: map[string]entry{"a": {Value: []byte("1"), Version: 7}}, Leases: map[string]lease{"l": {Holder: "h", Token: 8}}}
	good, _ := encodeSnapshot(SnapshotInfo{Index: 9, Keys: 1, Leases: 1}, &st)
	f.Add(good)
	f.Add(good[:30])
	f.Add([]byte(snapMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, state, err := DecodeSnapshot(b)
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("DecodeSnapshot: %v, want nil or ErrBadSnapshot", err)
			}
			return
		}
		// What it accepts, the FSM restores.
		f := newFSM()
		var s snapshotState
		if err := msgpack.Unmarshal(state, &s); err != nil {
			t.Fatalf("accepted state does not decode: %v", err)
		}
		if err := f.Restore(nopCloser{bytes.NewReader(state)}); err != nil {
			t.Fatalf("accepted snapshot (index %d) does not restore: %v", info.Index, err)
		}
	})
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
