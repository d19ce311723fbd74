package packcache

import (
	"container/list"
	"os"
	"sync"
	"time"
)

// entry states, guarded by Cache.mu.
const (
	producing = iota // git is writing the file; in the index
	ready            // published: in the index and the LRU list
	gone             // out of the index; the file goes with the last ref
)

// entry is one cache file. The fields under "Cache.mu" belong to the
// cache's lock; progress has its own, so readers waiting for growth never
// touch the cache's lock.
type entry struct {
	id, repo, path string
	gen            uint64
	version        int
	command        string // Key.Command: "" for fetch, "ls-refs"

	// guarded by Cache.mu
	state       int
	refs        int // producer and readers holding the file
	invalidated bool
	size        int64 // final size, once ready
	elem        *list.Element
	lastRead    time.Time
	expires     time.Time

	p progress
}

// progress is how far the file has been written, and how production
// ended. Readers wait on it for growth.
type progress struct {
	mu      sync.Mutex
	size    int64
	done    bool
	err     error
	changed chan struct{} // closed on the next change, when watched
	watched bool
}

// grow records n more bytes written and wakes the waiting readers.
func (p *progress) grow(n int64) {
	p.mu.Lock()
	p.size += n
	p.wakeLocked()
	p.mu.Unlock()
}

// finish records the end of production; err nil means published.
func (p *progress) finish(err error) {
	p.mu.Lock()
	p.done, p.err = true, err
	p.wakeLocked()
	p.mu.Unlock()
}

func (p *progress) wakeLocked() {
	if p.watched {
		close(p.changed)
		p.changed, p.watched = nil, false
	}
}

// state returns the size written so far, and whether production ended
// and how.
func (p *progress) state() (int64, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size, p.done, p.err
}

// written is the size written so far.
func (p *progress) written() int64 {
	n, _, _ := p.state()
	return n
}

// beyond returns a channel closed when the file grows past off or
// production ends; nil if that has already happened.
func (p *progress) beyond(off int64) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.size > off {
		return nil
	}
	if !p.watched {
		p.changed, p.watched = make(chan struct{}), true
	}
	return p.changed
}

// unlink removes the entry's file; called once, when it is gone and no
// one holds it.
func (e *entry) unlink() error {
	err := os.Remove(e.path)
	if os.IsNotExist(err) {
		return nil
	}
	return err
}
