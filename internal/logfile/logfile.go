// Package logfile is a log file rotated by size: an io.Writer that
// appends to PATH and, when a write would take the file past MaxSize,
// renames it PATH.1 (PATH.1 becomes PATH.2, and so on, the oldest past
// MaxBackups removed) and starts PATH afresh. A line is never split
// across two files: each Write goes whole into one.
//
// Why not lumberjack (gopkg.in/natefinch/lumberjack.v2, served): a node's
// panic is written by the Go runtime to standard error, not through its
// logger, and must still land in the log file that is current when it
// happens (the one 'shoal up' shows when a node dies). That takes
// pointing runtime/debug.SetCrashOutput at each new file as it is
// opened, and lumberjack has no hook at rotation; it also starts a
// goroutine per logger that nothing stops (its mill), where every
// goroutine here has an owner. What is needed is a hundred lines.
package logfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Config configures a File.
type Config struct {
	// Path is the log file's name; its directory is created if need be.
	Path string
	// MaxSize is the size in bytes past which the file is rotated
	// (default 64 MiB). A single write larger than it goes whole into a
	// fresh file.
	MaxSize int64
	// MaxBackups is how many rotated files are kept (PATH.1 the newest);
	// 0 keeps none: the file is truncated when it is full.
	MaxBackups int
	// OnOpen, if set, is called with each file as it is opened (at Open
	// and after every rotation), before anything is written to it; the
	// File keeps ownership of f. A node points the runtime's crash output
	// there (runtime/debug.SetCrashOutput). An error from it fails the
	// Open or the rotation.
	OnOpen func(f *os.File) error
}

// DefaultMaxSize is MaxSize when it is not set.
const DefaultMaxSize = 64 << 20

// File is a log file rotated by size. It is safe for concurrent use.
type File struct {
	cfg Config

	mu     sync.Mutex
	f      *os.File
	size   int64
	closed bool
}

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("logfile: closed")

// Open opens (or creates) the file at cfg.Path for appending.
func Open(cfg Config) (*File, error) {
	if cfg.Path == "" {
		return nil, errors.New("logfile: empty path")
	}
	if cfg.MaxSize < 0 || cfg.MaxBackups < 0 {
		return nil, fmt.Errorf("logfile: max size %d and max backups %d: want numbers of at least 0", cfg.MaxSize, cfg.MaxBackups)
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("logfile: %w", err)
	}
	l := &File{cfg: cfg}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// open opens cfg.Path for appending and learns its size.
func (l *File) open() error {
	f, err := os.OpenFile(l.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("logfile: %w", err)
	}
	if l.cfg.OnOpen != nil {
		if err := l.cfg.OnOpen(f); err != nil {
			f.Close()
			return fmt.Errorf("logfile: %s: %w", l.cfg.Path, err)
		}
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends p, rotating first if p would take the file past MaxSize
// (unless the file is empty: a write larger than MaxSize gets a file of
// its own).
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	if l.f == nil { // a rotation could not reopen the file: try again
		if err := l.open(); err != nil {
			return 0, err
		}
	}
	if l.size > 0 && l.size+int64(len(p)) > l.cfg.MaxSize {
		if err := l.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

// rotate shifts the backups up by one, dropping the oldest, moves the
// current file to PATH.1 and opens a new PATH.
func (l *File) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	l.f = nil
	path := l.cfg.Path
	if l.cfg.MaxBackups == 0 {
		if err := os.Truncate(path, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			return l.reopenAfter(err)
		}
		return l.reopenAfter(nil)
	}
	backup := func(i int) string { return path + "." + strconv.Itoa(i) }
	if err := os.Remove(backup(l.cfg.MaxBackups)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return l.reopenAfter(err)
	}
	for i := l.cfg.MaxBackups - 1; i >= 1; i-- {
		if err := os.Rename(backup(i), backup(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return l.reopenAfter(err)
		}
	}
	if err := os.Rename(path, backup(1)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return l.reopenAfter(err)
	}
	return l.reopenAfter(nil)
}

// reopenAfter opens PATH again whatever happened, so that a failed
// rotation loses no later line, and reports the first error.
func (l *File) reopenAfter(err error) error {
	if oerr := l.open(); oerr != nil {
		return errors.Join(err, oerr)
	}
	if err != nil {
		return fmt.Errorf("logfile: rotating %s: %w", l.cfg.Path, err)
	}
	return nil
}

// Path is the current file's name.
func (l *File) Path() string { return l.cfg.Path }

// Close closes the file. Safe twice; Write fails with ErrClosed after it.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
