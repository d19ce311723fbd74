// Package queue has Pump, an unbounded FIFO that hands values to a
// channel: producers never block (memberlist's and raft's callbacks must
// not), and a slow consumer only grows the queue.
package queue

import "sync"

// Pump delivers pushed values on C in push order, from its own goroutine.
// Create it with New and stop it with Close.
type Pump[T any] struct {
	c    chan T
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu     sync.Mutex
	queue  []T
	closed bool
}

// New starts a pump.
func New[T any]() *Pump[T] {
	p := &Pump[T]{c: make(chan T), wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// C delivers the values; it is closed after Close.
func (p *Pump[T]) C() <-chan T { return p.c }

// Push queues v without blocking. After Close it is dropped.
func (p *Pump[T]) Push(v T) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.queue = append(p.queue, v)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close stops delivery, drops what is queued, waits for the pump's
// goroutine and closes C. Safe to call twice and concurrently.
func (p *Pump[T]) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.queue = nil
		p.mu.Unlock()
		close(p.stop)
	})
	<-p.done
}

func (p *Pump[T]) run() {
	defer close(p.done)
	defer close(p.c)
	for {
		p.mu.Lock()
		batch := p.queue
		p.queue = nil
		p.mu.Unlock()
		for _, v := range batch {
			select {
			case p.c <- v:
			case <-p.stop:
				return
			}
		}
		select {
		case <-p.wake:
		case <-p.stop:
			return
		}
	}
}
