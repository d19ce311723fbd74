package gitfront

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// gitResponse writes git's output to the client. The status line and
// headers go out with the first byte (preceded by prefix), so a git
// failure before any output can still be answered with an error status.
// Every write is flushed: the client sees progress and pack data as git
// produces them, in chunks (Transfer-Encoding: chunked, no length). A
// response whose length is known in advance (a pack cache hit, through
// SetContentLength) goes out with Content-Length instead, and ReadFrom
// hands its file to net/http, which sends it with sendfile.
type gitResponse struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	contentType string
	prefix      []byte
	started     bool
	n           int64
	length      int64 // the whole body's length, -1 when unknown
}

func newGitResponse(w http.ResponseWriter, contentType string) *gitResponse {
	return &gitResponse{w: w, rc: http.NewResponseController(w), contentType: contentType, length: -1}
}

// SetContentLength says, before the first byte, that the body will be n
// bytes long (the pack cache calls it on a hit). The header is only set
// when the response starts, so an error status can still be sent.
func (g *gitResponse) SetContentLength(n int64) {
	if !g.started && len(g.prefix) == 0 && n >= 0 {
		g.length = n
	}
}

// ReadFrom copies r to the client. With a known length it lets
// http.ResponseWriter's ReadFrom send it (sendfile from an *os.File);
// otherwise it writes and flushes as Write does, and nothing is sent
// before r's first byte (a git process failing at once still gets its
// error status).
func (g *gitResponse) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := g.w.(io.ReaderFrom)
	if g.length < 0 || !ok {
		return io.Copy(writerOnly{g}, r)
	}
	g.start()
	n, err := rf.ReadFrom(r)
	g.n += n
	return n, err
}

// writerOnly hides gitResponse's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// start sends the headers and the prefix once.
func (g *gitResponse) start() {
	if g.started {
		return
	}
	g.started = true
	h := g.w.Header()
	h.Set("Content-Type", g.contentType)
	h.Set("Cache-Control", "no-cache, max-age=0, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "Fri, 01 Jan 1980 00:00:00 GMT")
	if g.length >= 0 {
		h.Set("Content-Length", strconv.FormatInt(g.length, 10))
	}
	g.w.WriteHeader(http.StatusOK)
	if len(g.prefix) > 0 {
		n, _ := g.w.Write(g.prefix)
		g.n += int64(n)
	}
}

// Write sends b to the client and flushes it.
func (g *gitResponse) Write(b []byte) (int, error) {
	g.start()
	n, err := g.w.Write(b)
	g.n += int64(n)
	if err == nil {
		if ferr := g.rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
			err = ferr
		}
	}
	return n, err
}

// headBuffer keeps the first max bytes written to it (git's stderr).
type headBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Bytes returns what was kept.
func (h *headBuffer) Bytes() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.b
}
