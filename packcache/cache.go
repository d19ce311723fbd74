package packcache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// ErrClosed is returned by the methods of a closed Cache.
var ErrClosed = errors.New("packcache: cache closed")

// Result says how a request was served.
type Result int

const (
	// Bypass: git ran for this request alone, the cache was not used.
	Bypass Result = iota
	// Hit: served from a published entry, git did not run.
	Hit
	// Miss: this request started the git process that produces an entry.
	Miss
	// Joined: served from an entry another request's git was producing.
	Joined
	// Rejected: the request was malformed; nothing was written.
	Rejected
)

// String returns the result's name, as used in metrics.
func (r Result) String() string {
	switch r {
	case Bypass:
		return "bypass"
	case Hit:
		return "hit"
	case Miss:
		return "miss"
	case Joined:
		return "joined"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Cache serves upload-pack responses from files. All its methods are safe
// for concurrent use. Close it to stop its git processes.
type Cache struct {
	cfg    Config
	base   context.Context // ends on Close; parent of every git process
	cancel context.CancelFunc
	wg     sync.WaitGroup // productions and bypasses
	once   sync.Once
	stats  counters
	seq    atomic.Uint64 // makes file names unique

	mu     sync.Mutex
	closed bool
	index  map[string]*entry // by key ID: producing and ready entries
	lru    *list.List        // ready entries, most recently read first
	bytes  int64             // sum of the ready entries' sizes
	// pushing counts pushes in progress per repository when Generations
	// keeps no markers (a single process).
	pushing map[string]int

	// hookWrite, when set (by tests, before use), runs in the producing
	// goroutine after each write to an entry's file.
	hookWrite func(e *entry, written int64, cmd *exec.Cmd)
	// hookWoken, when set (by tests, before use), runs in the producing
	// goroutine once the entry's readers have been woken, last.
	hookWoken func(e *entry)
}

const filePrefix = "pc-"

// New validates cfg, creates cfg.Dir if needed, removes the files a
// previous process left in it and returns a ready Cache.
func New(cfg Config) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("packcache: %w", err)
	}
	if err := sweepOrphans(cfg.Dir); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, index: make(map[string]*entry), lru: list.New()}
	c.base, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// sweepOrphans removes every cache file in dir: entries and partial files
// of a previous process, whose generations cannot be trusted.
func sweepOrphans(dir string) error {
	names, err := filepath.Glob(filepath.Join(dir, filePrefix+"*"))
	if err != nil {
		return fmt.Errorf("packcache: %w", err)
	}
	for _, n := range names {
		if err := os.Remove(n); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("packcache: sweeping orphans: %w", err)
		}
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := c.stats.snapshot()
	c.mu.Lock()
	s.Entries, s.Bytes = c.lru.Len(), c.bytes
	c.mu.Unlock()
	return s
}

// Close kills the git processes producing entries, waits for them and for
// the bypass processes to end, and removes the cache's files (those still
// being read go when their readers close). Readers of unfinished entries
// get an error. Close is safe to call more than once.
func (c *Cache) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancel()
		c.wg.Wait()
		c.mu.Lock()
		for _, e := range c.index {
			c.removeLocked(e, nil)
		}
		c.mu.Unlock()
	})
	return nil
}

// Invalidate says the repository's refs changed: it bumps its generation
// and drops its local entries. An entry being produced is not published.
// It returns the Generations error, if any, after dropping the entries.
func (c *Cache) Invalidate(ctx context.Context, repo string) error {
	_, err := c.cfg.Generations.Bump(ctx, repo)
	c.Forget(repo)
	if err != nil {
		return fmt.Errorf("packcache: bumping %q: %w", repo, err)
	}
	return nil
}

// BeginPush must be called before a push's git may move a ref of repo.
// It records the push in the generation store (a marker, when
// Generations is a PushMarker such as StoreGenerations; else a bump),
// then drops the repository's local entries and announces the push to the
// other nodes (Config.Announce). It returns the Push, whose End the
// caller must call once git has exited, whatever happened: End raises
// the generation again, then drops and announces once more. An error
// (the store could not be reached before ctx ended, a marker write whose
// outcome is unknown, ...) means that nothing vouches that the caches
// would not outlive the push: its git must not run. See the package doc.
func (c *Cache) BeginPush(ctx context.Context, repo string) (*Push, error) {
	var p *Push
	if pm, ok := c.cfg.Generations.(PushMarker); ok {
		var err error
		if p, err = pm.BeginPush(ctx, repo); err != nil {
			return nil, fmt.Errorf("packcache: recording a push of %q: %w", repo, err)
		}
	} else {
		if _, err := c.cfg.Generations.Bump(ctx, repo); err != nil {
			return nil, fmt.Errorf("packcache: recording a push of %q: %w", repo, err)
		}
		c.localPush(repo, 1)
		p = newPush(repo, func(ctx context.Context) (bool, error) {
			_, err := c.cfg.Generations.Bump(ctx, repo)
			return c.localPush(repo, -1) == 0 && err == nil, err
		})
	}
	c.stats.pushes.Add(1)
	c.drop(repo)
	p.after = func() { c.drop(repo) }
	return p, nil
}

// localPush adds d to the repository's pushes in progress through this
// cache and returns how many there are: a single process's own count,
// for Generations that keep no markers.
func (c *Cache) localPush(repo string, d int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pushing == nil {
		c.pushing = make(map[string]int)
	}
	n := c.pushing[repo] + d
	if n <= 0 {
		delete(c.pushing, repo)
	} else {
		c.pushing[repo] = n
	}
	return n
}

// drop forgets the repository's local entries and tells the other nodes.
func (c *Cache) drop(repo string) {
	c.Forget(repo)
	if c.cfg.Announce == nil {
		return
	}
	if err := c.cfg.Announce(repo); err != nil {
		// Harmless: the generation in every key moved in the store.
		c.cfg.Logger.Warn("packcache: announcing a push failed", "repo", repo, "err", err)
	}
}

// Forget drops the repository's local entries without bumping its
// generation: for a node told by the bus that another node already did.
// It returns how many entries it dropped.
func (c *Cache) Forget(repo string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.index {
		if e.repo == repo {
			c.removeLocked(e, &c.stats.dropped)
			n++
		}
	}
	return n
}

// removeLocked takes e out of the index (and the LRU list); its file is
// removed now if no one holds it, else by the last release. A producing
// entry will not be published. Counter n, if not nil, is incremented.
func (c *Cache) removeLocked(e *entry, n *atomic.Uint64) {
	if e.state == gone {
		return
	}
	if c.index[e.id] == e {
		delete(c.index, e.id)
	}
	if e.elem != nil {
		c.lru.Remove(e.elem)
		e.elem = nil
		c.bytes -= e.size
	}
	e.invalidated = e.state == producing
	e.state = gone
	if n != nil {
		n.Add(1)
	}
	if e.refs == 0 {
		c.unlink(e)
	}
}

// release drops one reference to e, removing its file if it was the last
// one of an entry out of the index.
func (c *Cache) release(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.state == gone {
		c.unlink(e)
	}
}

func (c *Cache) unlink(e *entry) {
	if err := e.unlink(); err != nil {
		c.cfg.Logger.Warn("packcache: removing entry file", "path", e.path, "err", err)
	}
}

// countWriter counts the bytes written through it into n.
type countWriter struct {
	w io.Writer
	n *atomic.Uint64
	t int64
}

func (cw *countWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n.Add(uint64(n))
	cw.t += int64(n)
	return n, err
}

// ReadFrom lets io.Copy reach w's own ReadFrom (sendfile for sockets).
func (cw *countWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(cw.w, r)
	cw.n.Add(uint64(n))
	cw.t += n
	return n, err
}
