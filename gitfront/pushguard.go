package gitfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/pktline"
)

// PushGuard brackets every receive-pack so that no cache of the
// repository can outlive a push, whatever process dies when (the pack
// cache's BeginPush, through PushGuardFunc). It must be safe for
// concurrent use.
type PushGuard interface {
	// BeginPush is called before git receive-pack starts, with a context
	// bounded by GitConfig.PushGuardTimeout; repo is RepoName(project,
	// repo). An error refuses the push: git never runs, so no ref moves.
	BeginPush(ctx context.Context, repo string) (PushTicket, error)
}

// PushTicket is one push in progress (*packcache.Push implements it).
type PushTicket interface {
	// Expired is closed when the guard can no longer vouch for the push:
	// the front then kills git at once.
	Expired() <-chan struct{}
	// Cause says why Expired closed.
	Cause() error
	// End is called once git has exited, whatever happened. It reports
	// whether no other push of the repository is known to be in
	// progress, on any node (the quarantine sweep needs that).
	End(ctx context.Context) (idle bool, err error)
}

// PushGuardFunc adapts a function to PushGuard.
type PushGuardFunc func(ctx context.Context, repo string) (PushTicket, error)

// BeginPush calls f.
func (f PushGuardFunc) BeginPush(ctx context.Context, repo string) (PushTicket, error) {
	return f(ctx, repo)
}

// beginPush asks the guard, if any, for a ticket, within
// PushGuardTimeout. A nil ticket and nil error: no guard.
func (g *GitHandler) beginPush(ctx context.Context, q *gitRequest) (PushTicket, error) {
	if g.cfg.PushGuard == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PushGuardTimeout)
	defer cancel()
	start := time.Now()
	t, err := g.cfg.PushGuard.BeginPush(ctx, q.name())
	if err == nil && t == nil {
		err = errors.New("the push guard returned no ticket")
	}
	if err != nil {
		return nil, fmt.Errorf("could not record the push in the cluster's store within %v: %w",
			time.Since(start).Round(time.Millisecond), err)
	}
	return t, nil
}

// guardedContext is ctx, cancelled with the ticket's cause when it
// expires. The returned stop must be called when git has exited.
func guardedContext(ctx context.Context, t PushTicket) (context.Context, func()) {
	if t == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-t.Expired():
			cancel(t.Cause())
		case <-done:
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// endPush ends the ticket within PushGuardTimeout and reports whether the
// repository has no push in progress.
func (g *GitHandler) endPush(r *http.Request, q *gitRequest, t PushTicket) bool {
	if t == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), g.cfg.PushGuardTimeout)
	defer cancel()
	idle, err := t.End(ctx)
	if err != nil {
		g.cfg.Logger.Error("gitfront: recording the end of a push failed; the repository is not cached until its marker expires",
			"repo", q.name(), "err", err)
	}
	return idle && err == nil
}

// refusePush answers a push the guard refused before git ran: nothing was
// stored and no ref moved. A client that asked for report-status is told
// in-band (each ref "remote rejected" with the reason, and the reason on
// the progress channel when it multiplexes), with 200 as git requires to
// read it; others get 503. The body is read to its end first, so that the
// client, still sending its pack, gets the answer.
func (g *GitHandler) refusePush(w http.ResponseWriter, r *http.Request, q *gitRequest, body *pktReader, cause error) {
	g.c.pushesRefused.Add(1)
	g.cfg.Logger.Error("gitfront: push refused before git ran: no ref moved", "repo", q.name(), "err", cause)
	rec := &commandRecorder{r: body}
	if _, err := io.Copy(io.Discard, rec); err != nil {
		g.fail(w, r, err)
		return
	}
	caps := rec.capabilities()
	reason := "shoal: push refused, no ref changed: " + cause.Error()
	if !caps["report-status"] && !caps["report-status-v2"] {
		g.fail(w, r, newHTTPError(http.StatusServiceUnavailable, cause, reason))
		return
	}
	out := newGitResponse(w, "application/x-git-receive-pack-result")
	_, err := out.Write(refusalReport(rec.updates(), caps, reason))
	g.finish(w, r, out, nil, err)
}

// refusalReport is receive-pack's report-status for a push refused
// whole: "unpack <reason>" and "ng <ref> <reason>" for every command,
// wrapped in side-band packets (with the reason on band 2 too) when the
// client asked for them.
func refusalReport(updates []RefUpdate, caps map[string]bool, reason string) []byte {
	reason = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, reason)
	if len(reason) > 900 {
		reason = reason[:900]
	}
	var report []byte
	report = append(report, pktLine("unpack "+reason+"\n")...)
	for _, u := range updates {
		report = append(report, pktLine("ng "+u.Ref+" "+reason+"\n")...)
	}
	report = append(report, pktFlush...)
	if !caps["side-band-64k"] && !caps["side-band"] {
		return report
	}
	max := pktline.MaxPayloadLen - 1 // one byte for the band
	if !caps["side-band-64k"] {
		max = 1000 - pktline.HeaderLen - 1
	}
	out := pktLine("\x02" + reason + "\n")
	for len(report) > 0 {
		n := min(len(report), max)
		out = append(out, pktLine("\x01"+string(report[:n]))...)
		report = report[n:]
	}
	return append(out, pktFlush...)
}

// capabilities are those on the first command line, after its NUL.
func (c *commandRecorder) capabilities() map[string]bool {
	pr := pktline.NewReader(strings.NewReader(string(c.buf)))
	caps := map[string]bool{}
	for {
		t, p, err := pr.Next()
		if err != nil || t != pktline.Data {
			return caps
		}
		if _, list, ok := strings.Cut(string(pktline.TrimLF(p)), "\x00"); ok {
			for _, c := range strings.Fields(list) {
				caps[c] = true
			}
			return caps
		}
	}
}
