package packcache

import (
	"context"
	"fmt"
	"sync"
)

// Generations is where a repository's ref generation lives: a counter that
// goes up whenever its refs change. The cache reads it for every request
// (it is part of the key) and again before publishing an entry, and bumps
// it on Invalidate. A node wires it to the replicated store so that every
// node sees a push even when it missed the broadcast. Implementations must
// be safe for concurrent use and should answer quickly: a lookup waits for
// Generation. An error makes the request bypass the cache.
type Generations interface {
	// Generation returns the repository's current generation; 0 for a
	// repository never bumped.
	Generation(ctx context.Context, repo string) (uint64, error)
	// Bump increments the repository's generation and returns the new one.
	Bump(ctx context.Context, repo string) (uint64, error)
}

// Invalidator is what a push path needs from the cache: a way to say that
// a repository's refs changed. *Cache implements it.
type Invalidator interface {
	Invalidate(ctx context.Context, repo string) error
}

// MemGenerations is an in-memory Generations for a single node and for
// tests. Its zero value is ready to use; it is safe for concurrent use.
type MemGenerations struct {
	mu  sync.Mutex
	gen map[string]uint64
}

// Generation implements Generations.
func (m *MemGenerations) Generation(_ context.Context, repo string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen[repo], nil
}

// Bump implements Generations.
func (m *MemGenerations) Bump(_ context.Context, repo string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == nil {
		m.gen = make(map[string]uint64)
	}
	m.gen[repo]++
	return m.gen[repo], nil
}

// MemStore is an in-memory Store, for a single process and for tests.
// Its zero value is ready to use; it is safe for concurrent use.
type MemStore struct {
	mu      sync.Mutex
	version uint64
	data    map[string]memValue
}

type memValue struct {
	value   []byte
	version uint64
}

// Get implements Store.
func (m *MemStore) Get(_ context.Context, key string) ([]byte, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.data[key]
	return append([]byte(nil), v.value...), v.version, nil
}

// CompareAndSet implements Store.
func (m *MemStore) CompareAndSet(_ context.Context, key string, expect uint64, value []byte) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.data[key].version; cur != expect {
		return 0, fmt.Errorf("%w: %q is at %d, not %d", ErrConflict, key, cur, expect)
	}
	if m.data == nil {
		m.data = make(map[string]memValue)
	}
	m.version++
	m.data[key] = memValue{value: append([]byte(nil), value...), version: m.version}
	return m.version, nil
}
