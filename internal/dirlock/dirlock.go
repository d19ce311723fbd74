// Package dirlock keeps two processes from using one data directory at
// once: a lock file in the directory, locked with flock(2) and holding the
// PID of its holder. The kernel releases the lock when the holder dies,
// however it dies, so a killed node restarts without help.
package dirlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FileName is the lock file's name in the directory.
const FileName = "LOCK"

// ErrLocked: another process holds the directory. The error names the
// directory and, when it can be read, the holder's PID.
var ErrLocked = errors.New("data directory in use")

// Lock is a held directory lock.
type Lock struct {
	path string
	f    *os.File
	once sync.Once
	err  error
}

// retryEvery is how often Acquire tries again while it may wait.
const retryEvery = 50 * time.Millisecond

// Acquire locks dir (which must exist), trying again for up to wait (a
// process that is stopping releases its lock as it exits) and giving up
// early when ctx ends. Nothing else in the directory is touched.
func Acquire(ctx context.Context, dir string, wait time.Duration) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dirlock: %w", err)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		err := tryLock(f)
		if err == nil {
			break
		}
		if !errors.Is(err, errWouldBlock) {
			f.Close()
			return nil, fmt.Errorf("dirlock: locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("%w: %s: gave up waiting for it: %w", ErrLocked, dir, ctx.Err())
		case <-deadline.C:
			f.Close()
			return nil, lockedError(dir, path)
		case <-time.After(retryEvery):
		}
	}
	if err := writePID(f); err != nil {
		unlock(f)
		f.Close()
		return nil, fmt.Errorf("dirlock: writing %s: %w", path, err)
	}
	return &Lock{path: path, f: f}, nil
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// Holder returns the PID written in dir's lock file, 0 if there is none
// (which does not say whether the lock is held).
func Holder(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func lockedError(dir, path string) error {
	if pid := Holder(dir); pid > 0 {
		return fmt.Errorf("%w: %s is held by process %d (lock file %s); stop that process or use another directory", ErrLocked, dir, pid, path)
	}
	return fmt.Errorf("%w: %s is held by another process (lock file %s); stop it or use another directory", ErrLocked, dir, path)
}

// Release unlocks. The file stays: removing it could let a process that
// opened it a moment ago lock a file nobody else sees. Safe to call twice.
func (l *Lock) Release() error {
	l.once.Do(func() {
		l.err = errors.Join(l.f.Truncate(0), unlock(l.f), l.f.Close())
	})
	return l.err
}
