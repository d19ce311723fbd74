package cp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// writeWAL leaves a raft-wal log in raftDir/wal as a node of an earlier
// version did: entries 1..n, a term and a vote.
func writeWAL(t *testing.T, raftDir string, n uint64, truncateTail bool) {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	if err := os.MkdirAll(filepath.Join(raftDir, oldWALDirName), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := raftwal.Open(filepath.Join(raftDir, oldWALDirName), raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := uint64(1); i <= n; i++ {
		if err := w.StoreLog(&raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if truncateTail { // hashicorp/raft-wal issue #31: sealed without an index
		if err := w.DeleteRange(n-2, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	if err := w.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
}

// TestRaftWALLogMoved: a data directory written with raft-wal is moved
// into raftlog at Open, entries and votes intact, and wal/ removed.
func TestRaftWALLogMoved(t *testing.T) {
	dir := t.TempDir()
	writeWAL(t, dir, 40, false)
	l, err := openLog(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if last, _ := l.LastIndex(); last != 40 {
		t.Fatalf("last index %d after the move, want 40", last)
	}
	for i := uint64(1); i <= 40; i++ {
		var e raft.Log
		if err := l.GetLog(i, &e); err != nil || string(e.Data) != fmt.Sprint(i) || e.Term != 2 {
			t.Fatalf("entry %d after the move: %+v, %v", i, e, err)
		}
	}
	if term, _ := l.GetUint64([]byte("CurrentTerm")); term != 2 {
		t.Fatalf("CurrentTerm %d after the move", term)
	}
	if v, _ := l.Get([]byte("LastVoteCand")); string(v) != "n2" {
		t.Fatalf("LastVoteCand %q after the move", v)
	}
	if _, err := os.Stat(filepath.Join(dir, oldWALDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the raft-wal directory is still there: %v", err)
	}
}

// TestRaftWALDamageReported: a raft-wal log damaged by its issue #31 is
// reported as ErrDamagedLog naming it, and left in place.
func TestRaftWALDamageReported(t *testing.T) {
	dir := t.TempDir()
	writeWAL(t, dir, 40, true)
	_, err := openLog(dir, testLogger(t))
	wal := filepath.Join(dir, oldWALDirName)
	if !errors.Is(err, ErrDamagedLog) || !containsAll(err.Error(), wal, "sealed segment has no index block") {
		t.Fatalf("openLog of a damaged raft-wal = %v", err)
	}
	if _, err := os.Stat(wal); err != nil {
		t.Fatalf("the damaged raft-wal directory was not left in place: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, logDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a half-moved log was left: %v", err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
