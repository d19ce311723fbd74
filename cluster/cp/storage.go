package cp

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/shoal-dev/shoal/cluster/cp/raftlog"
)

// The raft state of a node, under DataDir/raft:
//
//	node-id      the node's name (a directory of another node is refused)
//	log/         the raft log and stable store (package raftlog)
//	snapshots/   raft's file snapshots
//
// Before raftlog, the log lived in wal/ (hashicorp/raft-wal); Open moves
// such a log into log/ once and removes wal/.
const (
	logDirName    = "log"
	oldWALDirName = "wal"
)

// openLog opens DataDir/raft/log, first moving a raft-wal log into it if
// that is what the directory holds. A log that cannot be read is
// ErrDamagedLog naming the directory.
func openLog(raftDir string, logger *slog.Logger) (*raftlog.Log, error) {
	dir := filepath.Join(raftDir, logDirName)
	wal := filepath.Join(raftDir, oldWALDirName)
	if _, err := os.Stat(wal); err == nil {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if err := migrateWAL(wal, dir, logger); err != nil {
				return nil, err
			}
		}
		// Moved (now, or by an earlier start that stopped before this).
		if err := os.RemoveAll(wal); err != nil {
			return nil, fmt.Errorf("cp: removing the old raft-wal log %s: %w", wal, err)
		}
	}
	l, err := raftlog.Open(dir, raftlog.Options{Logger: logger})
	if errors.Is(err, raftlog.ErrCorrupt) {
		return nil, fmt.Errorf("%w: %s: %v", ErrDamagedLog, dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("cp: opening the raft log in %s: %w", dir, err)
	}
	return l, nil
}

// stableKeys are the keys raft keeps in its stable store.
var stableKeys = []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}

// migrateWAL copies a raft-wal log and stable store into a new raftlog
// at dir: written in dir.migrating, then renamed, so a crash leaves
// either no log/ (and the move starts again) or a whole one.
func migrateWAL(wal, dir string, logger *slog.Logger) (err error) {
	tmp := dir + ".migrating"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	defer func() {
		if r := recover(); r != nil { // raft-wal panics on some damage
			err = fmt.Errorf("%w: %s: %v", ErrDamagedLog, wal, r)
		}
	}()
	w, err := raftwal.Open(wal, raftwal.WithMetaStore(meta))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDamagedLog, wal, err)
	}
	defer w.Close()
	l, err := raftlog.Open(tmp, raftlog.Options{})
	if err != nil {
		return err
	}
	n, err := copyLog(wal, w, l)
	if cerr := l.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	logger.Info("cp: moved the raft log from raft-wal to raftlog", "from", wal, "to", dir, "entries", n)
	return nil
}

// copyLog copies every entry and the stable keys from a raft-wal log.
func copyLog(path string, w *raftwal.WAL, l *raftlog.Log) (int, error) {
	first, err := w.FirstIndex()
	if err != nil {
		return 0, err
	}
	last, err := w.LastIndex()
	if err != nil {
		return 0, err
	}
	n := 0
	for i := first; i <= last && last > 0; i++ {
		var e raft.Log
		if err := w.GetLog(i, &e); err != nil {
			return n, fmt.Errorf("%w: %s: index %d: %v", ErrDamagedLog, path, i, err)
		}
		if err := l.StoreLog(&e); err != nil {
			return n, err
		}
		n++
	}
	for _, k := range stableKeys {
		v, err := w.Get([]byte(k))
		if err != nil {
			return n, err
		}
		if len(v) > 0 {
			if err := l.Set([]byte(k), v); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}
