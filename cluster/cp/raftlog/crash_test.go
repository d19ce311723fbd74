package raftlog

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// The truncate-kill-reopen scenario of hashicorp/raft-wal issue #31, run
// in a child process that SIGKILLs itself: entries 1..100 of term 1, raft
// clears the suffix 91..100 (a new leader's entries conflict), entries
// 91..95 of term 2 follow, and the process dies. Every later open must
// find 1..90 of term 1 and 91..95 of term 2.
const (
	crashEnvStore = "RAFTLOG_CRASH_STORE"
	crashEnvDir   = "RAFTLOG_CRASH_DIR"
)

type logStore interface {
	raft.LogStore
	Close() error
}

type walStore struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
}

func (w walStore) Close() error { w.WAL.Close(); return w.meta.Close() }

// openStore opens either store, turning a panic into an error; raftlog
// with small segments, so that the crash test crosses segments.
func openStore(kind, dir string) (logStore, error) { return openStoreSized(kind, dir, 1<<10) }

// openStoreSized opens either store; raftlog with segments of segSize
// (0: the default).
func openStoreSized(kind, dir string, segSize int64) (s logStore, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	switch kind {
	case "raftlog":
		return Open(dir, Options{SegmentSize: segSize})
	case "raft-wal":
		meta := &metadb.BoltMetaDB{}
		w, err := raftwal.Open(dir, raftwal.WithMetaStore(meta)) // default segments, as cp used it
		if err != nil {
			meta.Close()
			return nil, err
		}
		return walStore{w, meta}, nil
	}
	return nil, fmt.Errorf("unknown store %q", kind)
}

// getLog reads an entry, turning a panic into an error.
func getLog(s logStore, i uint64, e *raft.Log) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.GetLog(i, e)
}

// TestCrashChild is the child process of TestTruncateKillReopen; it does
// nothing in a normal run.
func TestCrashChild(t *testing.T) {
	kind, dir := os.Getenv(crashEnvStore), os.Getenv(crashEnvDir)
	if kind == "" {
		t.Skip("the child process of TestTruncateKillReopen")
	}
	s, err := openStore(kind, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { return storeBatches(s, entries(1, 100, 1)) },
		func() error { return s.DeleteRange(91, 100) }, // raft: "clearing log suffix from=91 to=100"
		func() error { return storeBatches(s, entries(91, 95, 2)) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("WRITTEN")
	syscall.Kill(os.Getpid(), syscall.SIGKILL) // no Close: the process dies
	select {}
}

func storeBatches(s logStore, es []*raft.Log) error {
	for len(es) > 0 {
		n := min(10, len(es))
		if err := s.StoreLogs(es[:n]); err != nil {
			return err
		}
		es = es[n:]
	}
	return nil
}

// crashAfterTruncation runs the child and returns what reopening finds
// wrong, or nil if every entry is there.
func crashAfterTruncation(t *testing.T, kind string) error {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvStore+"="+kind, crashEnvDir+"="+dir)
	out, err := cmd.CombinedOutput()
	if !strings.Contains(string(out), "WRITTEN") {
		t.Fatalf("child did not finish writing (%v):\n%s", err, out)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed: %v", cmd.ProcessState)
	}
	s, err := openStore(kind, dir)
	if err != nil {
		return err
	}
	defer s.Close()
	for i := uint64(1); i <= 95; i++ {
		var e raft.Log
		if err := getLog(s, i, &e); err != nil {
			return fmt.Errorf("index %d: %w", i, err)
		}
		if want := entry(i, map[bool]uint64{true: 2, false: 1}[i > 90]); e.Term != want.Term || string(e.Data) != string(want.Data) {
			return fmt.Errorf("index %d: term %d %q, want term %d", i, e.Term, e.Data, want.Term)
		}
	}
	if last, err := s.LastIndex(); err != nil || last != 95 {
		return fmt.Errorf("last index %d (%v), want 95", last, err)
	}
	return nil
}

// TestTruncateKillReopen: raftlog keeps every entry through a crash right
// after a suffix truncation. The same scenario reproduces raft-wal
// v0.4.0's bug (issue #31: the truncated tail segment is sealed without
// an index block, and every later read of it fails with "sealed segment
// has no index block", which raft answers with a panic at start-up).
func TestTruncateKillReopen(t *testing.T) {
	if err := crashAfterTruncation(t, "raftlog"); err != nil {
		t.Fatalf("raftlog after truncate, kill, reopen: %v", err)
	}
	err := crashAfterTruncation(t, "raft-wal")
	if err == nil {
		t.Fatal("raft-wal survived truncate, kill, reopen: its issue #31 is fixed in this version; revisit the choice in DEPENDENCIES.md")
	}
	if !strings.Contains(err.Error(), "sealed segment has no index block") {
		t.Fatalf("raft-wal failed otherwise than its issue #31: %v", err)
	}
	t.Logf("raft-wal v0.4.0, as expected: %v", err)
}
