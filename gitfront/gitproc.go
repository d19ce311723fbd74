package gitfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/pktline"
)

// uploadPackConfig lets upload-pack serve partial clones and the lazy
// fetches that follow them, whatever the repository's own config says.
var uploadPackConfig = []string{
	"-c", "uploadpack.allowFilter=true",
	"-c", "uploadpack.allowReachableSHA1InWant=true",
}

// waitDelay bounds how long Wait waits for git's output pipes after git
// was killed (a grandchild could hold them).
const waitDelay = 5 * time.Second

// infoRefs serves GET info/refs: the ref advertisement, preceded for
// protocol v0/v1 by the "# service=..." pkt-line and a flush-pkt, as git
// http-backend does; from the advertisement cache when it is on.
func (g *GitHandler) infoRefs(w http.ResponseWriter, r *http.Request, q *gitRequest, dir string) {
	out := newGitResponse(w, "application/x-"+q.service+"-advertisement")
	if !isV2(q.protocol) {
		out.prefix = append(pktLine("# service="+q.service+"\n"), pktFlush...)
	}
	if g.adverts != nil && q.service == uploadPack {
		g.cachedAdvert(w, r, q, dir, out)
		return
	}
	g.finish(w, r, out, nil, g.advertise(r, q, dir, out))
}

// advertise runs git to write q's ref advertisement to out.
func (g *GitHandler) advertise(r *http.Request, q *gitRequest, dir string, out io.Writer) error {
	args := []string{strings.TrimPrefix(q.service, "git-"), "--stateless-rpc", "--advertise-refs"}
	if q.service == uploadPack {
		args = append(append(append([]string{}, uploadPackConfig...), args...), "--strict")
	}
	return g.run(r.Context(), out, nil, q.env(r, g.env), append(args, dir)...)
}

// cachedAdvert serves the upload-pack advertisement from the cache, or
// from git keeping a copy under the generation read before git ran. When
// the generation cannot be read, git serves and nothing is kept.
func (g *GitHandler) cachedAdvert(w http.ResponseWriter, r *http.Request, q *gitRequest, dir string, out *gitResponse) {
	key := advertKey{repo: q.name(), protocol: q.protocol}
	gen, err := g.cfg.AdvertGenerations.Generation(r.Context(), key.repo)
	if err != nil {
		g.cfg.Logger.Debug("gitfront: advertisement cache bypassed", "repo", key.repo, "err", err)
		g.finish(w, r, out, nil, g.advertise(r, q, dir, out))
		return
	}
	if data, ok := g.adverts.get(key, gen); ok {
		g.c.advertHits.Add(1)
		_, err := out.Write(data)
		g.finish(w, r, out, nil, err)
		return
	}
	g.c.advertMisses.Add(1)
	keep := &capWriter{max: int(g.cfg.AdvertCacheBytes / 4)}
	err = g.advertise(r, q, dir, io.MultiWriter(out, keep))
	if err == nil && !keep.over {
		g.adverts.put(key, gen, keep.buf)
	}
	g.finish(w, r, out, nil, err)
}

// uploadPack serves POST git-upload-pack through the UploadPacker, or
// git when there is none.
func (g *GitHandler) uploadPack(w http.ResponseWriter, r *http.Request, q *gitRequest, dir string) {
	body, err := requestBody(r, g.cfg.MaxRequestBytes, pktAll)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	out := newGitResponse(w, "application/x-git-upload-pack-result")
	if g.cfg.UploadPacker != nil {
		err = g.cfg.UploadPacker.ServeUploadPack(r.Context(), out, q.name(), dir, q.protocol, body)
	} else {
		args := append(append([]string{}, uploadPackConfig...), "upload-pack", "--stateless-rpc", "--strict", dir)
		err = g.runWithBody(r.Context(), w, r, out, body, q.env(r, g.env), args...)
	}
	g.finish(w, r, out, body, err)
}

// receivePack serves POST git-receive-pack: it asks the PushGuard
// before git may move a ref (a refusal is answered in-band and git never
// runs), runs git (killed if the guard's ticket expires), ends the
// ticket, calls OnPush, and sweeps the repository's stale quarantines
// when no push of it is in progress.
func (g *GitHandler) receivePack(w http.ResponseWriter, r *http.Request, q *gitRequest, dir string) {
	body, err := requestBody(r, g.cfg.MaxPushBytes, pktCommands)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	ticket, err := g.beginPush(r.Context(), q)
	if err != nil {
		g.refusePush(w, r, q, body, err)
		return
	}
	out := newGitResponse(w, "application/x-git-receive-pack-result")
	rec := &commandRecorder{r: body}
	ctx, stop := guardedContext(r.Context(), ticket)
	err = g.runWithBody(ctx, w, r, out, rec, q.env(r, g.env), "receive-pack", "--stateless-rpc", dir)
	stop()
	if ticket != nil && isDone(ticket.Expired()) {
		g.c.pushesLost.Add(1)
		g.cfg.Logger.Error("gitfront: push stopped: nothing vouched for it any more", "repo", q.name(), "err", ticket.Cause())
	}
	if hook := g.hookAfterReceive.Load(); hook != nil && (*hook)(q.name()) {
		panic(http.ErrAbortHandler) // a test's crash: nothing after git runs
	}
	updates := rec.updates()
	if err == nil {
		// Before the push ends: ending it moves the repository's
		// generation, so no cached advertisement keeps the old HEAD.
		if b, herr := adoptPushedBranch(context.WithoutCancel(r.Context()), dir, updates); herr != nil {
			g.cfg.Logger.Warn("gitfront: setting the default branch after a push failed", "repo", q.name(), "err", herr)
		} else if b != "" {
			g.cfg.Logger.Info("gitfront: default branch set to the first pushed branch", "repo", q.name(), "branch", b)
		}
	}
	idle := g.endPush(r, q, ticket)
	if g.cfg.OnPush != nil {
		ctx := context.WithValue(context.WithoutCancel(r.Context()), refUpdatesKey{}, updates)
		g.cfg.OnPush(ctx, q.project, q.repo)
	}
	if idle {
		g.sweepQuarantines(q, dir)
	}
	g.finish(w, r, out, body, err)
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// env is git's environment for q: GIT_PROTOCOL from the Git-Protocol
// header, and the caller for hooks (REMOTE_USER, REMOTE_ADDR).
func (q *gitRequest) env(r *http.Request, base []string) []string {
	env := append([]string{}, base...)
	if q.protocol != "" {
		env = append(env, "GIT_PROTOCOL="+q.protocol)
	}
	if p, ok := PrincipalFrom(r.Context()); ok {
		env = append(env, "REMOTE_USER="+p.Name)
	}
	return append(env, "REMOTE_ADDR="+r.RemoteAddr)
}

// finish turns the outcome of a git exchange into the end of the
// response: an error status if nothing was written yet, an empty 200 for
// a clean exit without output, and a log line for a failure after output
// started (the client sees a cut-off response).
func (g *GitHandler) finish(w http.ResponseWriter, r *http.Request, out *gitResponse, body *pktReader, err error) {
	g.c.bytesOut.Add(uint64(out.n))
	if body != nil && body.Err() != nil {
		err = body.Err() // the client's fault explains whatever git did
	}
	gone := r.Context().Err() != nil // the client left, or half-closed after a cut-off body
	switch {
	case err == nil:
		out.start()
	case !out.started && (!gone || errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge)):
		g.fail(w, r, err)
	case gone:
		g.c.failed.Add(1)
		g.cfg.Logger.Debug("gitfront: client gone", "path", r.URL.Path, "err", err)
	default:
		g.c.failed.Add(1)
		g.cfg.Logger.Warn("gitfront: git response cut short", "path", r.URL.Path, "err", err)
	}
}

// run runs git with args, its stdout to out, killing git (and its
// children) when ctx ends. feed, if set, starts after git with git's
// stdin; it must close stdin when done. A non-zero exit is an error
// carrying git's first stderr line; a protocol error git reports is the
// client's (ErrMalformed).
func (g *GitHandler) run(ctx context.Context, out io.Writer, feed func(stdin io.WriteCloser), env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, g.cfg.GitBin, args...)
	cmd.Env, cmd.Stdout, cmd.WaitDelay = env, out, waitDelay
	stderr := &headBuffer{max: 4096}
	cmd.Stderr = stderr
	killGroup(cmd)
	var stdin io.WriteCloser
	if feed != nil {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return fmt.Errorf("git stdin: %w", err)
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start git: %w", err)
	}
	g.c.processes.Add(1)
	g.c.running.Add(1)
	defer g.c.running.Add(-1)
	if feed != nil {
		feed(stdin)
	}
	return gitExit(ctx, cmd.Wait(), args[0], stderr.Bytes())
}

// gitExit explains git's exit.
func gitExit(ctx context.Context, err error, what string, stderr []byte) error {
	if err == nil {
		return nil
	}
	msg := firstLine(stderr)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("git %s stopped: %w (%v)", what, context.Cause(ctx), err)
	case strings.Contains(msg, "protocol error"):
		return fmt.Errorf("%w: git: %s", ErrMalformed, msg)
	}
	if m, refused := pktline.RequestRefused(stderr); refused {
		return fmt.Errorf("%w: git refused it: %s", ErrMalformed, m)
	}
	return fmt.Errorf("git %s: %w: %s", what, err, msg)
}

// runWithBody runs git fed with body on stdin, under ctx (r's context or
// one derived from it). A body that fails to read
// (bad framing, too large, cut off, client gone) kills git. When git
// exits while the client is still sending, a read deadline unblocks the
// body read, so the feeding goroutine ends before the handler returns.
func (g *GitHandler) runWithBody(ctx context.Context, w http.ResponseWriter, r *http.Request, out io.Writer, body io.Reader, env []string, args ...string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	f := &feeder{body: body, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	err := g.run(ctx, out, func(stdin io.WriteCloser) {
		f.stdin = stdin
		wg.Go(f.run)
	}, env, args...)
	unblocked := f.stdin != nil && !f.finished()
	if unblocked {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	wg.Wait()
	if f.err != nil && !unblocked && !errors.Is(err, ErrMalformed) {
		return f.err // the body failed first: that is why git stopped
	}
	return err
}

// feeder copies the request body into git's stdin.
type feeder struct {
	body   io.Reader
	stdin  io.WriteCloser
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error // the body's read error, set before done closes
}

func (f *feeder) run() {
	defer close(f.done)
	defer f.stdin.Close()
	buf := make([]byte, 32<<10)
	for {
		n, rerr := f.body.Read(buf)
		if n > 0 {
			if _, werr := f.stdin.Write(buf[:n]); werr != nil {
				return // git is gone; its exit status tells why
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			f.err = rerr
			f.cancel(rerr)
			return
		}
	}
}

func (f *feeder) finished() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}
