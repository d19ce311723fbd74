package cp

import (
	"strings"

	"github.com/shoal-dev/shoal/internal/queue"
)

// Event is a committed change to a key.
type Event struct {
	Key     string
	Value   []byte
	Version uint64
	Deleted bool
}

// Watch delivers the changes under a prefix as this node applies them, in
// commit order, from the moment it is created. It queues without bound:
// read C promptly.
type Watch struct {
	prefix string
	p      *queue.Pump[Event]
	s      *Store
}

// C delivers the events; it is closed by Close or when the store closes.
func (w *Watch) C() <-chan Event { return w.p.C() }

// Close stops the watch. Safe to call twice.
func (w *Watch) Close() {
	w.s.watchMu.Lock()
	delete(w.s.watchers, w)
	w.s.watchMu.Unlock()
	w.p.Close()
}

// Watch starts watching keys with the given prefix ("" for all).
func (s *Store) Watch(prefix string) *Watch {
	w := &Watch{prefix: prefix, p: queue.New[Event](), s: s}
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watchers == nil { // closed
		w.p.Close()
		return w
	}
	s.watchers[w] = struct{}{}
	return w
}

// dispatch hands applied changes to the watches; it runs on raft's FSM
// goroutine, in commit order, and never blocks.
func (s *Store) dispatch(events []Event) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for w := range s.watchers {
		for _, e := range events {
			if strings.HasPrefix(e.Key, w.prefix) {
				w.p.Push(e)
			}
		}
	}
}

func (s *Store) closeWatches() {
	s.watchMu.Lock()
	ws := s.watchers
	s.watchers = nil
	s.watchMu.Unlock()
	for w := range ws {
		w.p.Close()
	}
}
