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
	return t.get(ctx, key, nil, load)
}

// GetQuery is Get for a query region: the result is cached against the
// query spaces it reads (see Region.GetQuery).
func (t Typed[T]) GetQuery(ctx context.Context, key string, spaces []string, load func(ctx context.Context) (T, error)) (T, error) {
	return t.get(ctx, key, spaces, load)
}

func (t Typed[T]) get(ctx context.Context, key string, spaces []string, load func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	b, err := t.R.get(ctx, key, spaces, func(ctx context.Context) ([]byte, error) {
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
