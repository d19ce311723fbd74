package gitfront

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func mustPool(t *testing.T, c PoolConfig) *Pool {
	t.Helper()
	p, err := NewPool(PoolWeb, c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// hold occupies n slots of p until release is closed; it returns once
// they are all held.
func hold(t *testing.T, p *Pool, n int, release <-chan struct{}, wg *sync.WaitGroup) {
	t.Helper()
	for range n {
		wg.Go(func() { _ = p.Do(context.Background(), func() { <-release }) })
	}
	testkit.Eventually(t, 5*time.Second, "slots held", func() bool {
		s := p.Stats()
		return s.InFlight+s.Queued == int64(n)
	})
}

func TestPoolFullAndQueue(t *testing.T) {
	p := mustPool(t, PoolConfig{Concurrency: 2, Queue: 1, QueueTimeout: time.Minute, RetryAfter: time.Second})
	release := make(chan struct{})
	var wg sync.WaitGroup
	hold(t, p, 3, release, &wg) // 2 running, 1 queued
	if s := p.Stats(); s.InFlight != 2 || s.Queued != 1 {
		t.Fatalf("stats %+v, want 2 in flight, 1 queued", s)
	}
	if err := p.Do(context.Background(), func() { t.Error("ran in a full pool") }); !errors.Is(err, ErrPoolFull) {
		t.Fatalf("Do on a full pool: %v, want ErrPoolFull", err)
	}
	close(release)
	wg.Wait()
	s := p.Stats()
	if s.Served != 3 || s.Rejected != 1 || s.InFlight != 0 || s.Queued != 0 || s.WaitTime <= 0 {
		t.Fatalf("stats after release %+v", s)
	}
}

func TestPoolQueueTimeoutAndCancel(t *testing.T) {
	p := mustPool(t, PoolConfig{Concurrency: 1, Queue: 4, QueueTimeout: 50 * time.Millisecond, RetryAfter: time.Second})
	release := make(chan struct{})
	var wg sync.WaitGroup
	hold(t, p, 1, release, &wg)
	start := time.Now()
	err := p.Do(context.Background(), func() { t.Error("ran past its queue timeout") })
	if !errors.Is(err, ErrQueueTimeout) || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Do: %v after %v, want ErrQueueTimeout after 50ms", err, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Do(ctx, func() {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Do with a canceled ctx: %v", err)
	}
	close(release)
	wg.Wait()
	if s := p.Stats(); s.TimedOut != 1 || s.Canceled != 1 || s.Served != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPoolNoQueue(t *testing.T) {
	p := mustPool(t, PoolConfig{Concurrency: 1, Queue: 0, QueueTimeout: time.Minute, RetryAfter: time.Second})
	release := make(chan struct{})
	var wg sync.WaitGroup
	hold(t, p, 1, release, &wg)
	if err := p.Do(context.Background(), func() {}); !errors.Is(err, ErrPoolFull) {
		t.Fatalf("Do with no queue: %v", err)
	}
	close(release)
	wg.Wait()
}

func TestPoolConfigRejected(t *testing.T) {
	for _, c := range []PoolConfig{{}, {Concurrency: 1}, {Concurrency: -1, QueueTimeout: 1, RetryAfter: 1}} {
		if _, err := NewPool(PoolWeb, c); !errors.Is(err, ErrConfig) {
			t.Errorf("NewPool(%+v): %v, want ErrConfig", c, err)
		}
	}
}
