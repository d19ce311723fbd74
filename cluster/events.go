package cluster

import "github.com/shoal-dev/shoal/internal/queue"

// Subscription delivers membership events, in the order they happened, on
// C. Events queue without bound while the subscriber is slow, so memberlist
// is never blocked by a subscriber; read C promptly.
type Subscription struct {
	p *queue.Pump[Event]
	n *Node
}

// C is the event channel. It is closed after Close, or when the node closes.
func (s *Subscription) C() <-chan Event { return s.p.C() }

// Close stops delivery and closes C. Safe to call twice.
func (s *Subscription) Close() {
	s.p.Close()
	s.n.unsubscribe(s)
}

func newSubscription(n *Node) *Subscription {
	return &Subscription{p: queue.New[Event](), n: n}
}

func (s *Subscription) push(e Event) { s.p.Push(e) }
