package gitfront

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
)

// ErrSlowBody: a request body did not arrive at the minimum rate
// (BodyConfig); the request is answered 408 and its connection closed.
var ErrSlowBody = errors.New("gitfront: request body too slow")

// BodyConfig is what the front asks of request bodies, so that a client
// that announces a body and then sends nothing (or a byte now and then)
// costs a connection for a bounded time and never holds a pool slot.
type BodyConfig struct {
	// Grace is how long a body may take before MinRate applies; default
	// 10 s.
	Grace time.Duration
	// MinRate is the rate (bytes per second) a body must keep up after
	// Grace, counted from the request's start; default 16 KiB/s. A body
	// behind it ends with ErrSlowBody (408).
	MinRate int64
	// Prefetch is the largest body (by Content-Length) that is read
	// whole before the request waits for its pool slot; larger bodies
	// and those without a length are read in the pool, at MinRate.
	// Default 1 MiB; negative for none.
	Prefetch int64
}

// DefaultBody is BodyConfig's defaults.
func DefaultBody() BodyConfig {
	return BodyConfig{Grace: 10 * time.Second, MinRate: 16 << 10, Prefetch: 1 << 20}
}

// Validate fills zero fields from DefaultBody and rejects nonsense.
func (c *BodyConfig) Validate() error {
	d := DefaultBody()
	switch {
	case c.Grace < 0:
		return config.Invalid("gitfront", "Body.Grace", c.Grace, "a duration of at least 0 (0: the default)")
	case c.MinRate < 0:
		return config.Invalid("gitfront", "Body.MinRate", c.MinRate, "a rate of at least 0 (0: the default)")
	}
	if c.Grace == 0 {
		c.Grace = d.Grace
	}
	if c.MinRate == 0 {
		c.MinRate = d.MinRate
	}
	if c.Prefetch == 0 {
		c.Prefetch = d.Prefetch
	}
	return nil
}

// rateChunk is how far ahead of the bytes received a read may wait: a
// read for more than this is given the time for rateChunk only.
const rateChunk = 32 << 10

// rateBody is a request body that must arrive at cfg.MinRate after
// cfg.Grace: before every read it sets the connection's read deadline to
// the time by which the bytes received so far plus one chunk were due.
// At the body's end (or an error) the deadline is cleared, so that the
// server's own read of the connection (which starts at the body's end) is
// not cut by it. Where the connection takes no deadline (HTTP/2, tests
// without a connection) the body is read as it is.
type rateBody struct {
	body  io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	cfg   BodyConfig
	n     int64
	done  bool
	slow  bool
	off   bool // the connection takes no deadline
}

func newRateBody(w http.ResponseWriter, body io.ReadCloser, cfg BodyConfig) *rateBody {
	return &rateBody{body: body, rc: http.NewResponseController(w), start: time.Now(), cfg: cfg}
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.done || b.off {
		return b.body.Read(p)
	}
	ahead := min(int64(len(p)), rateChunk)
	due := b.start.Add(b.cfg.Grace + time.Duration(float64(b.n+ahead)/float64(b.cfg.MinRate)*float64(time.Second)))
	if err := b.rc.SetReadDeadline(due); err != nil {
		b.off = true
		return b.body.Read(p)
	}
	n, err := b.body.Read(p)
	b.n += int64(n)
	if err != nil {
		b.done = true
		if errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(due) {
			// The deadline stays: the server's read of what is left
			// of the body fails at once and the connection closes.
			b.slow = true
			return n, fmt.Errorf("%w: %d bytes in %v (at least %d bytes/s after %v)", ErrSlowBody,
				b.n, time.Since(b.start).Round(time.Millisecond), b.cfg.MinRate, b.cfg.Grace)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) { // another's deadline (runWithBody's) stays too
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

func (b *rateBody) Close() error { return b.body.Close() }

// prefetch reads r's body (n bytes by its Content-Length) whole, at the
// minimum rate, and puts it back as an in-memory body.
func prefetch(r *http.Request, body *rateBody, n int64) error {
	buf := bytes.NewBuffer(make([]byte, 0, n))
	_, err := io.Copy(buf, io.LimitReader(body, n))
	if err != nil {
		return err
	}
	r.Body = io.NopCloser(buf)
	return nil
}

// bodyLimit is the largest body r's route takes, 0 when the front does
// not know it.
func (f *Front) bodyLimit(r *http.Request) int64 {
	if f.git != nil && strings.HasPrefix(r.URL.Path, scmPrefix) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/"+uploadPack):
			return f.git.cfg.MaxRequestBytes
		case strings.HasSuffix(r.URL.Path, "/"+receivePack):
			return f.git.cfg.MaxPushBytes
		}
		return 0
	}
	if f.cfg.BodyLimit != nil {
		return f.cfg.BodyLimit(r)
	}
	return 0
}

// admitBody refuses a body announced larger than its route takes (413,
// before any of it is read), puts the rest under the minimum rate, and
// reads small ones whole. false means the request was answered.
func (f *Front) admitBody(w http.ResponseWriter, r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	if limit := f.bodyLimit(r); limit > 0 && r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		writeError(w, r, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body over %d bytes, the most %s takes (%d announced)", limit, r.URL.Path, r.ContentLength))
		return false
	}
	body := newRateBody(w, r.Body, f.cfg.Body)
	r.Body = body
	if r.ContentLength <= 0 || r.ContentLength > f.cfg.Body.Prefetch {
		return true
	}
	if err := prefetch(r, body, r.ContentLength); err != nil {
		w.Header().Set("Connection", "close")
		if errors.Is(err, ErrSlowBody) {
			f.slowBodies.Add(1)
			f.cfg.Logger.Info("gitfront: slow request body refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
			writeError(w, r, http.StatusRequestTimeout, "the request body arrived too slowly")
			return false
		}
		msg := "the request body could not be read"
		if errors.Is(err, io.ErrUnexpectedEOF) {
			msg = "malformed request: request body cut off before its Content-Length"
		}
		writeError(w, r, http.StatusBadRequest, msg)
		return false
	}
	return true
}
