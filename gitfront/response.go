package gitfront

import (
	"errors"
	"net/http"
	"sync"
)

// gitResponse writes git's output to the client. The status line and
// headers go out with the first byte (preceded by prefix), so a git
// failure before any output can still be answered with an error status.
// Every write is flushed: the client sees progress and pack data as git
// produces them, in chunks (Transfer-Encoding: chunked, no length).
type gitResponse struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	contentType string
	prefix      []byte
	started     bool
	n           int64
}

func newGitResponse(w http.ResponseWriter, contentType string) *gitResponse {
	return &gitResponse{w: w, rc: http.NewResponseController(w), contentType: contentType}
}

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
