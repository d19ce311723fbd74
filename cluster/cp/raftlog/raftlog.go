// Package raftlog is a raft log and stable store in a directory: it
// implements hashicorp/raft's LogStore, MonotonicLogStore and StableStore,
// and survives a crash at any moment.
//
// The log is a sequence of segment files, each named by the index of its
// first entry, holding consecutive entries as checksummed records.
// Appends go to the last segment and are synced before StoreLogs returns,
// so an acknowledged entry is on disk. Every change that removes entries
// is ordered so that a crash part-way leaves a contiguous log that was
// valid before or after it:
//
//   - removing a prefix (compaction) first records the new first index in
//     a small file (written aside, synced, renamed), then deletes the
//     segments wholly below it; Open deletes any it finds left over;
//   - removing a suffix (raft's "clearing log suffix") deletes the later
//     segments from the last backwards, then truncates the segment that
//     holds the new last entry, and syncs both before returning, so the
//     entries written next can never meet the old ones on disk.
//
// At Open every record is read and checked. The only damage repaired is a
// record the process died while writing: an unfinished record at the very
// end of the last segment (cut short, failing its checksum as the last
// thing in the file, or followed only by zeros). It was never synced, so
// never acknowledged, and is cut off. Anything else (a bad record with
// data after it, a missing or overlapping segment, a damaged stable store)
// is ErrCorrupt, naming the file: the log is not guessed at.
//
// The stable store (raft's current term and vote) is one small file
// rewritten whole, aside and renamed, on every Set.
package raftlog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// Errors. They are wrapped with the file and what was wrong; test with
// errors.Is.
var (
	// ErrCorrupt: a file of the log is damaged in a way that cannot be a
	// write interrupted by a crash; the log refuses to open.
	ErrCorrupt = errors.New("raftlog: damaged")
	// ErrClosed: the log has been closed.
	ErrClosed = errors.New("raftlog: closed")
	// ErrOutOfOrder: StoreLogs was given entries that do not follow the
	// last one (raft never does this).
	ErrOutOfOrder = errors.New("raftlog: entries out of order")
	// ErrMiddle: DeleteRange was asked to remove entries that are
	// neither a prefix nor a suffix of the log.
	ErrMiddle = errors.New("raftlog: only a prefix or a suffix of the log can be deleted")
)

// Options tune a Log. The zero value is ready to use.
type Options struct {
	// SegmentSize is the size past which appends go to a new segment
	// (default 16 MiB), and the size a new segment is preallocated to.
	// Compaction deletes whole segments only, so the log holds up to one
	// segment more than raft keeps.
	SegmentSize int64
	// Logger is told of repairs made at Open (default: discarded).
	Logger *slog.Logger
}

// Log is the raft log and stable store of one directory. Its methods are
// safe for concurrent use: reads proceed while an append is being synced.
type Log struct {
	dir  string
	opts Options

	// wmu serialises the writers (StoreLogs, DeleteRange, Close).
	wmu    sync.Mutex
	failed error // a write failed half-way: refuse further writes

	// mu guards what readers see; writers take it to publish changes.
	mu          sync.RWMutex
	segs        []*segment
	first, last uint64 // both 0 when the log is empty
	closed      bool

	smu    sync.Mutex
	stable map[string][]byte
}

// Open opens the log in dir, creating the directory if needed, and checks
// every record. It refuses a damaged log with ErrCorrupt.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 16 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l := &Log{dir: dir, opts: opts}
	st, err := unseal(filepath.Join(dir, stableFile), stableMagic)
	if err == nil {
		l.stable, err = decodeStable(filepath.Join(dir, stableFile), st)
	}
	if err == nil {
		err = l.load()
	}
	if err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

// load opens the segments, repairs a torn tail, applies the persisted
// first index and checks that the segments are contiguous.
func (l *Log) load() error {
	bases, err := l.listSegments()
	if err != nil {
		return err
	}
	for i, base := range bases {
		s, res, err := openSegment(filepath.Join(l.dir, segName(base)), base)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, s)
		if res.tornAt < 0 {
			continue
		}
		if i != len(bases)-1 {
			return fmt.Errorf("%w: %s at offset %d: %s, in a segment that is not the last", ErrCorrupt, s.path, res.tornAt, res.why)
		}
		if err := s.truncate(res.tornAt, len(s.offs), 0); err != nil {
			return err
		}
		l.opts.Logger.Warn("raftlog: cut off a record that was never finished (the process stopped while writing it; it was never acknowledged)",
			"file", s.path, "offset", res.tornAt, "why", res.why)
	}
	if n := len(l.segs); n > 0 {
		preallocate(l.segs[n-1].f, l.opts.SegmentSize) // the one appended to
	}
	first, err := readFirst(l.dir)
	if err != nil {
		return err
	}
	if err := l.dropBelow(first); err != nil {
		return err
	}
	for i := 1; i < len(l.segs); i++ {
		if prev := l.segs[i-1]; l.segs[i].base != prev.last()+1 {
			return fmt.Errorf("%w: %s starts at index %d but %s ends at %d", ErrCorrupt, l.segs[i].path, l.segs[i].base, prev.path, prev.last())
		}
	}
	l.setBounds(first)
	return nil
}

// listSegments returns the base indexes of the segment files, sorted, and
// removes temporary files a crash left behind.
func (l *Log) listSegments() ([]uint64, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, err
	}
	var bases []uint64
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			if err := os.Remove(filepath.Join(l.dir, name)); err != nil {
				return nil, err
			}
		case strings.HasSuffix(name, segSuffix):
			base, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
			if err != nil || name != segName(base) {
				return nil, fmt.Errorf("%w: %s: unexpected segment name", ErrCorrupt, filepath.Join(l.dir, name))
			}
			bases = append(bases, base)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}

// dropBelow deletes the segments whose entries all lie below first, the
// remains of a compaction or a reset that a crash interrupted.
func (l *Log) dropBelow(first uint64) error {
	for len(l.segs) > 0 && l.segs[0].last() < first {
		s := l.segs[0]
		s.f.Close()
		if err := os.Remove(s.path); err != nil {
			return err
		}
		l.segs = l.segs[1:]
	}
	return syncDir(l.dir)
}

// setBounds recomputes first and last from the segments and the
// persisted first index.
func (l *Log) setBounds(persistedFirst uint64) {
	l.first, l.last = 0, 0
	if len(l.segs) == 0 {
		return
	}
	last := l.segs[len(l.segs)-1].last()
	first := max(persistedFirst, l.segs[0].base)
	if first > last {
		return // every segment is empty: the log is
	}
	l.first, l.last = first, last
}

// FirstIndex implements raft.LogStore: 0 when the log is empty.
func (l *Log) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return 0, ErrClosed
	}
	return l.first, nil
}

// LastIndex implements raft.LogStore: 0 when the log is empty.
func (l *Log) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return 0, ErrClosed
	}
	return l.last, nil
}

// IsMonotonic implements raft.MonotonicLogStore: raft then removes the
// whole log after restoring a snapshot rather than leaving a gap.
func (l *Log) IsMonotonic() bool { return true }

// GetLog implements raft.LogStore: raft.ErrLogNotFound outside the log.
func (l *Log) GetLog(index uint64, out *raft.Log) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	if l.last == 0 || index < l.first || index > l.last {
		return raft.ErrLogNotFound
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].last() >= index })
	s := l.segs[i]
	k := int(index - s.base)
	off := s.offs[k]
	end := s.size
	if k+1 < len(s.offs) {
		end = s.offs[k+1]
	}
	return s.readRecord(index, off, end-off, out)
}

// StoreLog implements raft.LogStore.
func (l *Log) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

// StoreLogs implements raft.LogStore: the entries are appended and synced
// before it returns. They must have consecutive indexes following the
// last entry; after a gap (or into an empty log) the log restarts at the
// first of them, as raft expects of a monotonic store after a snapshot.
func (l *Log) StoreLogs(entries []*raft.Log) error {
	if len(entries) == 0 {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	for i, e := range entries {
		if e.Index != entries[0].Index+uint64(i) {
			return fmt.Errorf("%w: index %d follows %d in one batch", ErrOutOfOrder, e.Index, entries[i-1].Index)
		}
	}
	l.mu.RLock()
	last := l.last
	l.mu.RUnlock()
	next := entries[0].Index
	switch {
	case next == 0:
		return fmt.Errorf("%w: index 0", ErrOutOfOrder)
	case last != 0 && next <= last:
		return fmt.Errorf("%w: index %d is not after the last entry %d (delete the suffix first)", ErrOutOfOrder, next, last)
	case last == 0 || next > last+1:
		if err := l.restartAt(next); err != nil {
			return l.fail(err)
		}
	}
	if err := l.rollIfFull(); err != nil {
		return l.fail(err)
	}
	return l.append(entries)
}

// append writes the records at the end of the last segment, syncs it and
// publishes them.
func (l *Log) append(entries []*raft.Log) error {
	s := l.segs[len(l.segs)-1] // only writers change segs, and wmu is held
	var buf []byte
	offs := make([]int64, len(entries))
	for i, e := range entries {
		offs[i] = s.size + int64(len(buf))
		buf = appendRecord(buf, e)
	}
	if _, err := s.f.WriteAt(buf, s.size); err != nil {
		s.f.Truncate(s.size) // best effort: leave no partial record behind
		return l.fail(fmt.Errorf("raftlog: writing %s: %w", s.path, err))
	}
	if err := s.f.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the pages:
		// nothing more can be trusted to reach the disk.
		return l.fail(fmt.Errorf("raftlog: syncing %s: %w", s.path, err))
	}
	l.mu.Lock()
	s.offs = append(s.offs, offs...)
	s.size += int64(len(buf))
	if l.first == 0 {
		l.first = entries[0].Index
	}
	l.last = entries[len(entries)-1].Index
	l.mu.Unlock()
	return nil
}

// rollIfFull starts a new segment when the last one has reached the
// segment size (a batch may take a segment past it).
func (l *Log) rollIfFull() error {
	s := l.segs[len(l.segs)-1]
	if s.size < l.opts.SegmentSize || len(s.offs) == 0 {
		return nil
	}
	// Trim the full segment's preallocated zeros before starting the
	// next: only the last segment may end with them.
	l.mu.Lock() // readers read the segment's fields
	err := s.truncate(s.size, len(s.offs), 0)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	ns, err := createSegment(l.dir, s.last()+1, l.opts.SegmentSize)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.segs = append(l.segs, ns)
	l.mu.Unlock()
	return nil
}

// restartAt empties the log and starts it again at index next: the old
// segments go first, then the new first index is recorded, then a new
// segment is created, so a crash in between leaves an empty log.
func (l *Log) restartAt(next uint64) error {
	if err := l.removeSegments(0); err != nil {
		return err
	}
	if err := writeFirst(l.dir, next); err != nil {
		return err
	}
	s, err := createSegment(l.dir, next, l.opts.SegmentSize)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.segs = []*segment{s}
	l.first, l.last = 0, 0
	l.mu.Unlock()
	return nil
}

// removeSegments closes and deletes the segments from position from on,
// the last first, and syncs the directory.
func (l *Log) removeSegments(from int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.segs) > from {
		s := l.segs[len(l.segs)-1]
		s.f.Close()
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		l.segs = l.segs[:len(l.segs)-1]
	}
	if from == 0 {
		l.first, l.last = 0, 0
	}
	return syncDir(l.dir)
}

// DeleteRange implements raft.LogStore for the two ranges raft deletes:
// a prefix (compaction, or the whole log after a snapshot is installed)
// and a suffix (entries that conflict with a new leader's). The change is
// durable when it returns.
func (l *Log) DeleteRange(lo, hi uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	l.mu.RLock()
	first, last := l.first, l.last
	l.mu.RUnlock()
	var err error
	switch {
	case lo > hi || last == 0 || hi < first || lo > last:
		return nil
	case lo <= first && hi >= last:
		err = l.deleteAll(last)
	case lo <= first:
		err = l.deletePrefix(hi + 1)
	case hi >= last:
		err = l.deleteSuffix(lo)
	default:
		return fmt.Errorf("%w: [%d, %d] of [%d, %d]", ErrMiddle, lo, hi, first, last)
	}
	if err != nil {
		return l.fail(err)
	}
	return nil
}

// deleteAll empties the log: the first index past its end is recorded
// before the segments go, so a crash in between reopens an empty log.
func (l *Log) deleteAll(last uint64) error {
	if err := writeFirst(l.dir, last+1); err != nil {
		return err
	}
	return l.removeSegments(0)
}

// deletePrefix makes newFirst the first entry: recorded first, then the
// segments wholly below it deleted.
func (l *Log) deletePrefix(newFirst uint64) error {
	if err := writeFirst(l.dir, newFirst); err != nil {
		return err
	}
	l.mu.Lock()
	l.first = newFirst
	var gone []*segment
	for len(l.segs) > 1 && l.segs[0].last() < newFirst {
		gone = append(gone, l.segs[0])
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	for _, s := range gone {
		s.f.Close()
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil // a segment left behind by a crash here is deleted by Open
}

// deleteSuffix removes the entries from lo on: later segments are
// deleted from the last backwards, then the one holding lo-1 is cut
// after it; both are synced.
func (l *Log) deleteSuffix(lo uint64) error {
	// lo > first >= the first segment's base, so k >= 1: the segment
	// holding lo-1 stays.
	k := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base >= lo })
	if err := l.removeSegments(k); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.segs[len(l.segs)-1]
	n := int(lo - s.base)
	if n < len(s.offs) {
		if err := s.truncate(s.offs[n], n, l.opts.SegmentSize); err != nil {
			return err
		}
	}
	l.last = lo - 1
	return nil
}

// truncate cuts the segment at off, keeping its first n records, and
// preallocates zeros up to prealloc again; durably.
func (s *segment) truncate(off int64, n int, prealloc int64) error {
	if err := s.f.Truncate(off); err != nil {
		return fmt.Errorf("raftlog: truncating %s: %w", s.path, err)
	}
	preallocate(s.f, prealloc)
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("raftlog: syncing %s: %w", s.path, err)
	}
	s.offs, s.size = s.offs[:n], off
	return nil
}

func (l *Log) writable() error {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return l.failed
}

// fail remembers a write that failed part-way: the files on disk are
// still a valid log (Open will say so), but this handle's view of them
// may not be, so it refuses further writes.
func (l *Log) fail(err error) error {
	if l.failed == nil {
		l.failed = fmt.Errorf("raftlog: an earlier write failed, reopen the log: %w", err)
	}
	return err
}

// Close closes the files. Safe to call twice.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	var errs []error
	for _, s := range l.segs {
		errs = append(errs, s.f.Close())
	}
	return errors.Join(errs...)
}

// Set implements raft.StableStore; the value is durable when it returns.
func (l *Log) Set(key, val []byte) error {
	l.smu.Lock()
	defer l.smu.Unlock()
	if l.isClosed() {
		return ErrClosed
	}
	next := make(map[string][]byte, len(l.stable)+1)
	for k, v := range l.stable {
		next[k] = v
	}
	next[string(key)] = append([]byte(nil), val...)
	if err := writeFileAtomic(filepath.Join(l.dir, stableFile), sealed(stableMagic, encodeStable(next))); err != nil {
		return fmt.Errorf("raftlog: writing the stable store: %w", err)
	}
	l.stable = next
	return nil
}

// Get implements raft.StableStore: an empty value when key was never set.
func (l *Log) Get(key []byte) ([]byte, error) {
	l.smu.Lock()
	defer l.smu.Unlock()
	if l.isClosed() {
		return nil, ErrClosed
	}
	return append([]byte(nil), l.stable[string(key)]...), nil
}

// SetUint64 implements raft.StableStore (8 bytes, little-endian).
func (l *Log) SetUint64(key []byte, val uint64) error {
	return l.Set(key, leUint64(val))
}

// GetUint64 implements raft.StableStore: 0 when key was never set.
func (l *Log) GetUint64(key []byte) (uint64, error) {
	v, err := l.Get(key)
	if err != nil || len(v) == 0 {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftlog: stable key %q holds %d bytes, not a uint64", key, len(v))
	}
	return fromLE(v), nil
}

func (l *Log) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}
