package l2cache

import (
	"context"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Typed caches values of a Go type in a region, msgpack-encoded, so that
// callers need not write encoders. The region keeps the decoded form of
// recent hits, so that reading an entry again costs no decoding: a value
// Get returns may share memory (the backing arrays of slices, maps,
// pointers) with what other callers get, and must be treated as
// immutable. Strings, numbers and plain structs of them are copies.
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
	if d, ok := t.R.decoded.load(key, b); ok {
		if v, ok := d.(T); ok {
			return v, nil
		}
	}
	var v T
	if err := msgpack.Unmarshal(b, &v); err != nil {
		return zero, fmt.Errorf("l2cache: region %s: decoding %q: %w", t.R.name, key, err)
	}
	t.R.decoded.store(key, b, v)
	return v, nil
}
