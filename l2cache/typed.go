package l2cache

import (
	"context"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Typed caches values of a Go type in a region, msgpack-encoded, so that
// callers need not write encoders. A decoded value is the caller's own
// copy.
type Typed[T any] struct {
	R *Region
}

// Get returns the cached T for key, or loads it.
func (t Typed[T]) Get(ctx context.Context, key string, load func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	b, err := t.R.Get(ctx, key, func(ctx context.Context) ([]byte, error) {
		v, err := load(ctx)
		if err != nil {
			return nil, err
		}
		return msgpack.Marshal(&v)
	})
	if err != nil {
		return zero, err
	}
	var v T
	if err := msgpack.Unmarshal(b, &v); err != nil {
		return zero, fmt.Errorf("l2cache: region %s: decoding %q: %w", t.R.name, key, err)
	}
	return v, nil
}
