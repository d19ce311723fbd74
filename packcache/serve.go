package packcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ServeUploadPack answers one stateless upload-pack request (the POST to
// .../git-upload-pack): it decodes body, which must already be
// decompressed, serves the response from the cache or from git, and
// streams it to w. protocol is the request's Git-Protocol header. repo
// names the repository in keys and Invalidate; repoPath is its directory
// on disk.
//
// It returns how the request was served and the first error: with
// Rejected, one wrapping ErrMalformed, before anything was written (the
// front end should answer 400), or with Bypass when git itself refused
// the request before writing anything (an unknown command or argument,
// another object format; git's message included); ErrClosed after Close; ErrGit or
// ErrIncomplete when git failed (its own message may already have reached
// the client); ErrInvalidated when a push during production prevented
// publication (the client did get git's whole response, consistent with
// the refs before the push: only the cache entry was discarded); or w's or
// ctx's error. It blocks until the response is written; ctx ending stops
// it, and kills git unless the process is producing an entry for the
// cache, which runs on for the next request. On a hit, a w implementing
// ContentLengthSetter is told the response's length first.
func (c *Cache) ServeUploadPack(ctx context.Context, w io.Writer, repo, repoPath, protocol string, body io.Reader) (Result, error) {
	resp, err := c.Open(ctx, repo, repoPath, protocol, body)
	if errors.Is(err, ErrMalformed) {
		return Rejected, err
	}
	if err != nil {
		return Bypass, err
	}
	defer resp.Close()
	if n, ok := resp.Size(); ok {
		if cl, ok := w.(ContentLengthSetter); ok {
			cl.SetContentLength(n)
		}
	}
	_, err = resp.Stream(ctx, w)
	return resp.Result, err
}

// ContentLengthSetter is implemented by a writer that can announce the
// response's length before its first byte, as an HTTP front does with
// Content-Length. ServeUploadPack calls it on a hit, where the length is
// known; net/http can then send the file with sendfile, where a chunked
// response goes through a user-space copy.
type ContentLengthSetter interface {
	SetContentLength(n int64)
}

// Response is one request's answer, opened but not yet streamed. Its
// owner must call Close. It is not safe for concurrent use.
type Response struct {
	// Result says where the response comes from.
	Result Result
	// Reason is why the request bypassed the cache (wrapping ErrBypass),
	// or nil.
	Reason error

	c *Cache
	e *entry
	f *os.File

	repoPath string // bypass only
	version  int
	stdin    io.Reader
	done     bool
}

// Open decodes the request read from body and finds where its response
// will come from, without writing anything. On a miss it starts git. See
// ServeUploadPack for the arguments and errors; Open returns ErrClosed
// after Close.
func (c *Cache) Open(ctx context.Context, repo, repoPath, protocol string, body io.Reader) (*Response, error) {
	version := ParseProtocol(protocol)
	raw, err := io.ReadAll(io.LimitReader(body, int64(c.cfg.MaxRequestBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("packcache: reading request: %w", err)
	}
	if len(raw) > c.cfg.MaxRequestBytes {
		reason := fmt.Errorf("%w: request over %d bytes", ErrBypass, c.cfg.MaxRequestBytes)
		return c.bypass(repoPath, version, io.MultiReader(bytes.NewReader(raw), body), reason)
	}
	req, err := DecodeRequest(version, raw)
	if err != nil {
		c.stats.rejected.Add(1)
		return nil, err
	}
	if err := req.Bypass(); err != nil {
		return c.bypass(repoPath, version, bytes.NewReader(raw), err)
	}
	if req.Command == "ls-refs" && !c.cfg.LsRefs {
		return c.bypass(repoPath, version, bytes.NewReader(raw), fmt.Errorf("%w: ls-refs caching is off", ErrBypass))
	}
	return c.lookup(ctx, repo, repoPath, req, raw)
}

// bypass returns a Response that runs git for this request alone.
func (c *Cache) bypass(repoPath string, version int, stdin io.Reader, reason error) (*Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	c.wg.Add(1) // done by Close or Stream of the Response
	c.stats.bypasses.Add(1)
	c.cfg.Logger.Debug("packcache: bypass", "reason", reason)
	return &Response{Result: Bypass, Reason: reason, c: c, repoPath: repoPath, version: version, stdin: stdin}, nil
}

// lookup serves a cacheable request: a hit, a join or a new production.
func (c *Cache) lookup(ctx context.Context, repo, repoPath string, req *Request, raw []byte) (*Response, error) {
	gen, err := c.cfg.Generations.Generation(ctx, repo)
	if err != nil {
		return c.bypass(repoPath, req.Version, bytes.NewReader(raw), fmt.Errorf("%w: generation: %w", ErrBypass, err))
	}
	key, err := KeyOf(repo, gen, req)
	if err != nil {
		return c.bypass(repoPath, req.Version, bytes.NewReader(raw), err)
	}
	e, result, err := c.acquire(key, repoPath, raw)
	if errors.Is(err, ErrBypass) {
		return c.bypass(repoPath, req.Version, bytes.NewReader(raw), err)
	}
	if err != nil {
		return nil, err
	}
	f, err := os.Open(e.path)
	if err != nil {
		c.release(e)
		return nil, fmt.Errorf("packcache: opening entry: %w", err)
	}
	return &Response{Result: result, c: c, e: e, f: f}, nil
}

// acquire finds or starts the entry for key and takes a reference to it.
func (c *Cache) acquire(key Key, repoPath string, raw []byte) (*entry, Result, error) {
	id := key.ID()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, ErrClosed
	}
	now := c.cfg.Clock()
	if e := c.index[id]; e != nil && e.state == ready && !now.Before(e.expires) {
		c.removeLocked(e, &c.stats.expired)
	}
	ls := key.Command == "ls-refs"
	if e := c.index[id]; e != nil {
		e.refs++
		if e.state == producing {
			c.stats.count(&c.stats.joined, &c.stats.lsJoined, ls)
			return e, Joined, nil
		}
		c.lru.MoveToFront(e.elem)
		e.lastRead = now
		c.stats.count(&c.stats.hits, &c.stats.lsHits, ls)
		return e, Hit, nil
	}
	if err := c.checkFreeLocked(); err != nil {
		return nil, 0, err
	}
	e, err := c.startLocked(id, key, repoPath, raw)
	if err != nil {
		return nil, 0, err
	}
	c.stats.count(&c.stats.misses, &c.stats.lsMisses, ls)
	return e, Miss, nil
}

// checkFreeLocked returns an ErrBypass error when Dir's file system is
// below the free-space floor.
func (c *Cache) checkFreeLocked() error {
	if c.cfg.MinFree == 0 {
		return nil
	}
	free, err := freeSpace(c.cfg.Dir)
	if err != nil {
		return fmt.Errorf("%w: free space: %w", ErrBypass, err)
	}
	if free < c.cfg.MinFree {
		return fmt.Errorf("%w: %d bytes free, below the floor of %d", ErrBypass, free, c.cfg.MinFree)
	}
	return nil
}

// freeSpace returns the bytes available to unprivileged users in dir's
// file system.
func freeSpace(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Size returns the response's length when it is known before streaming:
// on a hit. The HTTP front end can set Content-Length from it, which lets
// net/http use sendfile.
func (r *Response) Size() (int64, bool) {
	if r.Result != Hit {
		return 0, false
	}
	size, _, _ := r.e.p.state()
	return size, true
}

// Stream writes the response to w and returns the bytes written. It may
// be called once. From a file it copies what has been written so far,
// flushes w (if w has a Flush method) and waits for more, until
// production ends; the result is production's error, if any, after all
// of git's bytes. For a bypass it runs git with ctx.
func (r *Response) Stream(ctx context.Context, w io.Writer) (int64, error) {
	if r.done {
		return 0, errors.New("packcache: response already streamed")
	}
	r.done = true
	if r.Result == Bypass {
		defer r.c.wg.Done()
		return r.c.runBypass(ctx, w, r.repoPath, r.version, r.stdin)
	}
	n := &r.c.stats.fromGit
	if r.Result == Hit {
		n = &r.c.stats.fromCache
	}
	cw := &countWriter{w: w, n: n}
	err := r.streamFile(ctx, cw)
	return cw.t, err
}

// streamFile copies the entry's file to w as it grows.
func (r *Response) streamFile(ctx context.Context, w io.Writer) error {
	var off int64
	for {
		size, done, err := r.e.p.state()
		if off < size {
			// A LimitedReader over an *os.File: net.TCPConn.ReadFrom
			// and http's response.ReadFrom turn this into sendfile.
			n, werr := io.Copy(w, &io.LimitedReader{R: r.f, N: size - off})
			off += n
			if werr != nil {
				return werr
			}
			if n == 0 {
				return fmt.Errorf("packcache: entry file shorter than written (%d < %d)", off, size)
			}
			continue
		}
		if done {
			return err
		}
		flush(w)
		changed := r.e.p.beyond(off)
		if changed == nil {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// flush flushes w if it buffers: an http.ResponseWriter, a bufio.Writer.
func flush(w io.Writer) {
	if cw, ok := w.(*countWriter); ok {
		w = cw.w
	}
	switch f := w.(type) {
	case interface{ Flush() }:
		f.Flush()
	case interface{ Flush() error }:
		_ = f.Flush()
	}
}

// Close releases the response: its reference to the entry's file, or its
// slot among the bypass processes when it was not streamed. Safe twice.
func (r *Response) Close() error {
	if r.c == nil {
		return nil
	}
	if r.Result == Bypass && !r.done {
		r.c.wg.Done()
	}
	r.done = true
	var err error
	if r.f != nil {
		err = r.f.Close()
		r.c.release(r.e)
	}
	r.c = nil
	return err
}
