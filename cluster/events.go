package cluster

import "sync"

// Subscription delivers membership events, in the order they happened, on
// C. Events queue without bound while the subscriber is slow, so memberlist
// is never blocked by a subscriber; read C promptly.
type Subscription struct {
	c    chan Event
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once
	n    *Node

	mu    sync.Mutex
	queue []Event
}

// C is the event channel. It is closed after Close, or when the node closes.
func (s *Subscription) C() <-chan Event { return s.c }

// Close stops delivery and closes C. Safe to call twice.
func (s *Subscription) Close() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.n.unsubscribe(s)
}

func newSubscription(n *Node) *Subscription {
	s := &Subscription{
		c: make(chan Event), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), n: n,
	}
	go s.pump()
	return s
}

func (s *Subscription) push(e Event) {
	s.mu.Lock()
	s.queue = append(s.queue, e)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) pump() {
	defer close(s.done)
	defer close(s.c)
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, e := range batch {
			select {
			case s.c <- e:
			case <-s.stop:
				return
			}
		}
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
	}
}
