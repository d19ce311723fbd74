package gitfront

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// PoolConfig bounds one pool.
type PoolConfig struct {
	// Concurrency is how many requests the pool serves at once.
	Concurrency int
	// Queue is how many requests may wait for a slot. A request that finds
	// every slot busy and the queue full is refused at once (ErrPoolFull).
	// Negative means no queue; zero takes the default.
	Queue int
	// QueueTimeout is the longest a request waits in the queue before it
	// is refused (ErrQueueTimeout).
	QueueTimeout time.Duration
	// RetryAfter is what a refused client is told to wait (Retry-After,
	// rounded up to whole seconds).
	RetryAfter time.Duration
}

// withDefaults fills zero fields from def.
func (c PoolConfig) withDefaults(def PoolConfig) PoolConfig {
	if c.Concurrency == 0 {
		c.Concurrency = def.Concurrency
	}
	if c.Queue == 0 {
		c.Queue = def.Queue
	}
	if c.Queue < 0 {
		c.Queue = 0
	}
	if c.QueueTimeout == 0 {
		c.QueueTimeout = def.QueueTimeout
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = def.RetryAfter
	}
	return c
}

func (c PoolConfig) validate(name PoolName) error {
	if c.Concurrency <= 0 || c.QueueTimeout <= 0 || c.RetryAfter <= 0 {
		return fmt.Errorf("%w: pool %s needs Concurrency, QueueTimeout and RetryAfter > 0", ErrConfig, name)
	}
	return nil
}

// PoolStats is a snapshot of a pool's counters. InFlight and Queued are
// gauges; the rest only grow.
type PoolStats struct {
	Name        string
	Concurrency int
	QueueLimit  int
	InFlight    int64
	Queued      int64
	// Served counts requests that got a slot and finished.
	Served uint64
	// Rejected counts ErrPoolFull refusals, TimedOut ErrQueueTimeout
	// refusals, Canceled callers that gave up while queued.
	Rejected, TimedOut, Canceled uint64
	// WaitTime sums the time admitted requests spent queued; ServeTime
	// sums the time they held a slot. Divide by Served for means.
	WaitTime, ServeTime time.Duration
}

// Pool is a concurrency bound with a bounded FIFO queue. It is safe for
// concurrent use; its zero value is not usable, build it with NewPool.
type Pool struct {
	name  PoolName
	cfg   PoolConfig
	slots chan struct{}

	inFlight, queued                     atomic.Int64
	served, rejected, timedOut, canceled atomic.Uint64
	waitNanos, serveNanos                atomic.Int64
}

// NewPool builds a pool; cfg must be complete (Concurrency, QueueTimeout
// and RetryAfter above zero), else ErrConfig.
func NewPool(name PoolName, cfg PoolConfig) (*Pool, error) {
	if cfg.Queue < 0 {
		cfg.Queue = 0
	}
	if err := cfg.validate(name); err != nil {
		return nil, err
	}
	return &Pool{name: name, cfg: cfg, slots: make(chan struct{}, cfg.Concurrency)}, nil
}

// Name is the pool's name.
func (p *Pool) Name() PoolName { return p.name }

// Config is the pool's configuration.
func (p *Pool) Config() PoolConfig { return p.cfg }

// Do runs f holding one of the pool's slots, waiting in the queue for one
// when all are busy. It returns without running f when the queue is full
// (ErrPoolFull), when the wait exceeds QueueTimeout (ErrQueueTimeout), or
// when ctx ends while queued (ctx.Err()). Do blocks for at most
// QueueTimeout plus the time f takes.
func (p *Pool) Do(ctx context.Context, f func()) error {
	wait, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	p.waitNanos.Add(int64(wait))
	start := time.Now()
	defer p.release(start)
	f()
	return nil
}

// acquire takes a slot, returning how long it waited.
func (p *Pool) acquire(ctx context.Context) (time.Duration, error) {
	select {
	case p.slots <- struct{}{}:
		p.inFlight.Add(1)
		return 0, nil
	default:
	}
	if p.queued.Add(1) > int64(p.cfg.Queue) {
		p.queued.Add(-1)
		p.rejected.Add(1)
		return 0, fmt.Errorf("%w: %s", ErrPoolFull, p.name)
	}
	return p.wait(ctx)
}

// wait blocks in the queue; the caller has counted itself in queued.
// Blocked senders on a channel are served in arrival order, which makes
// the queue FIFO.
func (p *Pool) wait(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	t := time.NewTimer(p.cfg.QueueTimeout)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		p.queued.Add(-1)
		p.inFlight.Add(1)
		return time.Since(start), nil
	case <-t.C:
		p.queued.Add(-1)
		p.timedOut.Add(1)
		return 0, fmt.Errorf("%w: %s after %v", ErrQueueTimeout, p.name, p.cfg.QueueTimeout)
	case <-ctx.Done():
		p.queued.Add(-1)
		p.canceled.Add(1)
		return 0, ctx.Err()
	}
}

func (p *Pool) release(start time.Time) {
	p.serveNanos.Add(int64(time.Since(start)))
	p.served.Add(1)
	p.inFlight.Add(-1)
	<-p.slots
}

// Stats is a snapshot of the pool's counters.
func (p *Pool) Stats() PoolStats {
	return PoolStats{
		Name: p.name.String(), Concurrency: p.cfg.Concurrency, QueueLimit: p.cfg.Queue,
		InFlight: p.inFlight.Load(), Queued: p.queued.Load(),
		Served: p.served.Load(), Rejected: p.rejected.Load(),
		TimedOut: p.timedOut.Load(), Canceled: p.canceled.Load(),
		WaitTime:  time.Duration(p.waitNanos.Load()),
		ServeTime: time.Duration(p.serveNanos.Load()),
	}
}
