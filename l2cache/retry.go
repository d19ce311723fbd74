package l2cache

import (
	"context"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/internal/beat"
)

// A write's query-space update that did not reach every member (the
// write answered an error: a member could be neither told nor excluded,
// say from the minority side of a network partition) leaves a member's
// cached result over the spaces from before the write — in DISTRIBUTED
// mode the one result every node reads — until the spaces are next
// updated, which may be never. The write was not acknowledged, so no
// promise was broken; but the cache would not converge on the database.
// So the node keeps such updates and sends them again, to every member,
// until one attempt reaches them all (or excludes those it cannot):
// after the partition heals, at the latest. Sending an update again only
// stamps spaces again, which can invalidate more, never serve more.

// maxRetrySpaces bounds the updates kept for another attempt; past it the
// oldest is dropped (and counted: NodeStats.RetryDrops).
const maxRetrySpaces = 1024

// retryEvery is how often the kept updates are sent again.
var retryEvery = time.Second

// pendingSpaces is a query-space update to send again.
type pendingSpaces struct {
	spaces []string
	id     updateID
}

// retryLater keeps an update whose sending failed for another attempt,
// and starts the goroutine that makes it if it is not running (it ends
// once nothing is left to send). It does nothing once the cache is
// closed.
func (c *Cache) retryLater(spaces []string, id updateID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if len(c.retry) >= maxRetrySpaces {
		c.retry = slices.Delete(c.retry, 0, 1)
		c.stats.RetryDrops.Add(1)
	}
	c.retry = append(c.retry, pendingSpaces{spaces: slices.Clone(spaces), id: id})
	if c.retryStop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		c.retryStop, c.retryDone = cancel, make(chan struct{})
		go c.retryLoop(ctx, cancel, c.retryDone)
	}
}

// retryLoop sends the kept updates again every retryEvery until ctx is
// cancelled (Close) or none is left: an idle node does not wake for it.
func (c *Cache) retryLoop(ctx context.Context, cancel context.CancelFunc, done chan struct{}) {
	defer close(done)
	defer cancel()
	t := beat.NewTicker(retryEvery) // on the process's beat: see package beat
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		batch := c.retry
		c.retry = nil
		c.mu.Unlock()
		var failed []pendingSpaces
		for _, p := range batch {
			if ctx.Err() != nil {
				failed = append(failed, p)
				continue
			}
			if err := c.publish(ctx, message{Op: opSpaces, Spaces: p.spaces, Upd: p.id}); err != nil {
				failed = append(failed, p)
				continue
			}
			c.stats.Retried.Add(1)
		}
		c.mu.Lock()
		c.retry = append(failed, c.retry...)
		if len(c.retry) > maxRetrySpaces {
			c.stats.RetryDrops.Add(uint64(len(c.retry) - maxRetrySpaces))
			c.retry = slices.Delete(c.retry, 0, len(c.retry)-maxRetrySpaces)
		}
		if len(c.retry) == 0 {
			// The next failure starts another; a stopRetry that read
			// these already finds done closed.
			c.retryStop, c.retryDone = nil, nil
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// stopRetry stops the retry goroutine, if one runs, and waits for it.
// Called by Close, after closed is set (so no new one starts).
func (c *Cache) stopRetry() {
	c.mu.Lock()
	stop, done := c.retryStop, c.retryDone
	c.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
}
