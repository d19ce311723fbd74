package gitfront

import (
	"context"
	"sync"
	"time"
)

// tracker counts pooled requests and tells drainers when the front has
// been idle for a quiet period, counted from the drain's start or the
// last request since, whichever is later (the clock is read only while
// draining, off the hot path). Its zero value is ready.
type tracker struct {
	mu       sync.Mutex
	n        int       // requests admitted and not yet finished
	last     time.Time // since draining: the last admission or finish
	draining bool
	wake     chan struct{} // closed (and replaced) when n drops to 0
}

// enter counts a request in; while draining only continuations enter.
func (t *tracker) enter(continuation bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.draining && !continuation {
		return false
	}
	t.n++
	if t.draining {
		t.last = time.Now()
	}
	return true
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.draining {
		t.last = time.Now()
	}
	if t.n == 0 && t.wake != nil {
		close(t.wake)
		t.wake = nil
	}
}

// drain starts draining and waits until no request has run for quiet,
// or ctx ends (ctx.Err()).
func (t *tracker) drain(ctx context.Context, quiet time.Duration) error {
	for {
		wait, wake := t.idleWait(quiet)
		if wait <= 0 && wake == nil {
			return nil
		}
		if err := waitFor(ctx, wait, wake); err != nil {
			return err
		}
	}
}

// waitFor waits until wake closes or, when wake is nil, for d; or until
// ctx ends (ctx.Err()).
func waitFor(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	var timeout <-chan time.Time
	if wake == nil {
		timer := time.NewTimer(d)
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case <-wake:
	case <-timeout:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// idleWait marks the tracker draining and says what to wait for: a
// channel closed when the running requests finish, or (when none runs)
// the rest of the quiet period, zero when it has passed.
func (t *tracker) idleWait(quiet time.Duration) (time.Duration, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.draining {
		t.draining, t.last = true, time.Now()
	}
	if t.n > 0 {
		if t.wake == nil {
			t.wake = make(chan struct{})
		}
		return 0, t.wake
	}
	return quiet - time.Since(t.last), nil
}

func (t *tracker) isDraining() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.draining
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}
