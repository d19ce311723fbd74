package ui

import (
	"errors"
	"sync"
)

// topic is what a stream shows: a page, as an administrator or not.
type topic struct {
	page  string
	admin bool
}

// stream is one open EventSource. Messages queue in ch up to its
// capacity; a stream that falls further behind is dropped (gone closes).
type stream struct {
	t    topic
	ch   chan []byte
	gone chan struct{}
	once sync.Once
}

func (s *stream) drop() { s.once.Do(func() { close(s.gone) }) }

// hub fans messages out to the open streams, by topic.
type hub struct {
	mu      sync.Mutex
	streams map[topic]map[*stream]struct{}
	n, max  int
	buffer  int
	closed  bool
	// dropped counts streams dropped for falling behind.
	dropped uint64
}

var (
	errTooManyStreams = errors.New("ui: too many open event streams")
	errClosed         = errors.New("ui: the dashboard is closed")
)

func newHub(max, buffer int) *hub {
	return &hub{streams: map[topic]map[*stream]struct{}{}, max: max, buffer: buffer}
}

// open adds a stream, or refuses it when the hub is full or closed.
func (h *hub) open(t topic) (*stream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, errClosed
	case h.n >= h.max:
		return nil, errTooManyStreams
	}
	s := &stream{t: t, ch: make(chan []byte, h.buffer), gone: make(chan struct{})}
	if h.streams[t] == nil {
		h.streams[t] = map[*stream]struct{}{}
	}
	h.streams[t][s] = struct{}{}
	h.n++
	return s, nil
}

// remove forgets a stream (its handler returned). Safe to call twice.
func (h *hub) remove(s *stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s)
}

func (h *hub) removeLocked(s *stream) {
	set := h.streams[s.t]
	if _, ok := set[s]; !ok {
		return
	}
	delete(set, s)
	if len(set) == 0 {
		delete(h.streams, s.t)
	}
	h.n--
	s.drop()
}

// topics are those with at least one stream.
func (h *hub) topics() []topic {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]topic, 0, len(h.streams))
	for t := range h.streams {
		out = append(out, t)
	}
	return out
}

// publish queues msg on every stream of t, dropping those whose queue is
// full. It never blocks.
func (h *hub) publish(t topic, msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.streams[t] {
		select {
		case s.ch <- msg:
		default:
			h.dropped++
			h.removeLocked(s)
		}
	}
}

// count is the number of open streams.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// close ends every stream and refuses new ones. Safe to call twice.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, set := range h.streams {
		for s := range set {
			h.removeLocked(s)
		}
	}
}
