package packcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/pktline"
)

var (
	// ErrGit is wrapped when git upload-pack could not start or exited
	// with an error.
	ErrGit = errors.New("packcache: git upload-pack failed")
	// ErrInvalidated is wrapped when the repository's generation changed
	// (a push) while an entry was produced, so it was not published.
	ErrInvalidated = errors.New("packcache: repository changed during production")
)

// startLocked creates the entry's file, enters it in the index and starts
// the git process that fills it. The entry comes back with two
// references: the producer's and the caller's.
func (c *Cache) startLocked(id string, key Key, repoPath string, raw []byte) (*entry, error) {
	name := fmt.Sprintf("%s%s-%d", filePrefix, id[:40], c.seq.Add(1))
	e := &entry{id: id, repo: key.Repo, gen: key.Generation, version: key.Version,
		command: key.Command, path: filepath.Join(c.cfg.Dir, name), refs: 2}
	f, err := os.OpenFile(e.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: creating entry: %w", ErrBypass, err)
	}
	c.index[id] = e
	c.wg.Add(1)
	go c.produce(e, f, repoPath, raw)
	return e, nil
}

// produce runs git into f and then publishes or discards the entry. It
// runs on whether or not anyone still reads, until ProduceTimeout or
// Close.
func (c *Cache) produce(e *entry, f *os.File, repoPath string, raw []byte) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.base, c.cfg.ProduceTimeout)
	defer cancel()
	err := c.runGit(ctx, e, f, repoPath, raw)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("packcache: closing entry: %w", cerr)
	}
	if err == nil {
		err = c.checkGeneration(ctx, e)
	}
	c.complete(e, err)
}

// runGit runs git upload-pack with the request on stdin and copies its
// output into f, checking that the response is complete.
func (c *Cache) runGit(ctx context.Context, e *entry, f *os.File, repoPath string, raw []byte) error {
	cmd := c.command(ctx, repoPath, e.version)
	cmd.Stdin = bytes.NewReader(raw)
	stderr := &tailBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrGit, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: %w", ErrGit, err)
	}
	c.stats.gitStarted.Add(1)
	chk := &checker{version: e.version, lsRefs: e.command == "ls-refs"}
	copyErr := c.copyOut(e, f, out, chk, cmd)
	if copyErr != nil {
		_ = cmd.Process.Kill()
	}
	waitErr := cmd.Wait()
	switch {
	case copyErr != nil:
		return copyErr
	case waitErr != nil && e.p.written() == 0:
		return gitFailure(waitErr, stderr)
	case waitErr != nil:
		return fmt.Errorf("%w: %w: %s", ErrGit, waitErr, stderr)
	}
	return chk.result()
}

// copyOut copies git's output into f as fast as git writes it, feeding
// the checker and waking the readers after each write.
func (c *Cache) copyOut(e *entry, f *os.File, out io.Reader, chk *checker, cmd *exec.Cmd) error {
	buf := make([]byte, 64<<10)
	var total int64
	for {
		n, rerr := out.Read(buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return fmt.Errorf("packcache: writing entry: %w", err)
			}
			chk.feed(buf[:n])
			total += int64(n)
			c.stats.written.Add(uint64(n))
			e.p.grow(int64(n))
			if c.hookWrite != nil {
				c.hookWrite(e, total, cmd)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("%w: reading its output: %w", ErrGit, rerr)
		}
	}
}

// checkGeneration returns ErrInvalidated if the repository's generation
// moved since the entry's key was made.
func (c *Cache) checkGeneration(ctx context.Context, e *entry) error {
	gen, err := c.cfg.Generations.Generation(ctx, e.repo)
	if err != nil {
		return fmt.Errorf("%w: generation unknown: %w", ErrInvalidated, err)
	}
	if gen != e.gen {
		return fmt.Errorf("%w: generation %d, now %d", ErrInvalidated, e.gen, gen)
	}
	return nil
}

// complete publishes the entry if err is nil and no Invalidate or Close
// came meanwhile, else drops it; then it drops the producer's reference
// and wakes the readers. In that order: a reader that has read the whole
// entry finds it held by no one but the readers, so an entry removed once
// its last reader has gone has its file removed too (as a Sweep right
// after a clone expects).
func (c *Cache) complete(e *entry, err error) {
	c.mu.Lock()
	if err == nil && e.invalidated {
		err = fmt.Errorf("%w: dropped during production", ErrInvalidated)
	}
	if err == nil && c.closed {
		err = ErrClosed
	}
	size, _, _ := e.p.state()
	if err == nil {
		c.publishLocked(e, size)
	} else {
		c.stats.failed.Add(1)
		c.removeLocked(e, nil)
	}
	c.mu.Unlock()
	if err != nil {
		c.cfg.Logger.Info("packcache: entry not published", "repo", e.repo, "err", err)
	}
	c.release(e)
	e.p.finish(err)
	if c.hookWoken != nil {
		c.hookWoken(e)
	}
}

func (c *Cache) publishLocked(e *entry, size int64) {
	now := c.cfg.Clock()
	e.state, e.size = ready, size
	e.lastRead, e.expires = now, now.Add(c.cfg.TTL)
	e.elem = c.lru.PushFront(e)
	c.bytes += size
	c.stats.published.Add(1)
	c.evictLocked()
}

// runBypass runs git for one request, writing straight to w. Close kills
// it too.
func (c *Cache) runBypass(ctx context.Context, w io.Writer, repoPath string, version int, stdin io.Reader) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.base, cancel)()
	cmd := c.command(ctx, repoPath, version)
	cw := &countWriter{w: flushWriter{w}, n: &c.stats.fromGit}
	stderr := &tailBuffer{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, cw, stderr
	c.stats.gitStarted.Add(1)
	if err := cmd.Run(); err != nil {
		if cw.t == 0 {
			return 0, gitFailure(err, stderr)
		}
		return cw.t, fmt.Errorf("%w: %w: %s", ErrGit, err, stderr)
	}
	return cw.t, nil
}

// gitFailure explains git's exit before it wrote anything: ErrMalformed
// with git's message when git refused the request (an unknown command or
// argument, another object format: the client's fault), ErrGit otherwise.
func gitFailure(err error, stderr *tailBuffer) error {
	if msg, refused := pktline.RequestRefused([]byte(stderr.String())); refused {
		return fmt.Errorf("%w: git upload-pack refused it: %s", ErrMalformed, msg)
	}
	return fmt.Errorf("%w: %w: %s", ErrGit, err, stderr)
}

// command returns git upload-pack for a stateless request, killed when
// ctx ends.
func (c *Cache) command(ctx context.Context, repoPath string, version int) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.cfg.GitPath, "upload-pack", "--stateless-rpc", "--", repoPath)
	proto := "GIT_PROTOCOL="
	if version > 0 {
		proto += "version=" + strconv.Itoa(version)
	}
	cmd.Env = append(append(os.Environ(), c.cfg.GitEnv...), proto)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// flushWriter flushes w after every write, so that a bypass streams.
type flushWriter struct{ w io.Writer }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	flush(f.w)
	return n, err
}

// tailBuffer keeps the last 4 KiB written to it: git's stderr for errors.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}
