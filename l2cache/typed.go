package l2cache

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
//
// A loader that is a closure is allocated where the caller writes it,
// even when Get hits: a caller on a hot path can ask Cached first and
// build the loader only on a miss.
func (t Typed[T]) Get(ctx context.Context, key string, load func(ctx context.Context) (T, error)) (T, error) {
	return t.get(ctx, key, nil, load)
}

// GetMany is Get of several keys (Region.GetMany): load(ctx, i) loads
// keys[i]; the value and error of each key, as Get would return them.
func (t Typed[T]) GetMany(ctx context.Context, keys []string, load func(ctx context.Context, i int) (T, error)) ([]T, []error) {
	bs, errs := t.R.GetMany(ctx, keys, func(ctx context.Context, i int) ([]byte, error) {
		v, err := load(ctx, i)
		if err != nil {
			return nil, err
		}
		return msgpack.Marshal(&v)
	})
	vals := make([]T, len(keys))
	for i, b := range bs {
		if errs[i] == nil {
			vals[i], errs[i] = t.decode(keys[i], b)
		}
	}
	return vals, errs
}

// GetQuery is Get for a query region: the result is cached against the
// query spaces it reads (see Region.GetQuery).
func (t Typed[T]) GetQuery(ctx context.Context, key string, spaces []string, load func(ctx context.Context) (T, error)) (T, error) {
	return t.get(ctx, key, spaces, load)
}

// Cached returns the T cached for key if this node holds it and may serve
// it without loading or asking another node (a LOCAL hit, or a NEAR hit on
// a near copy: counted as a hit, as Get would count it). Otherwise it returns false and counts
// nothing; Get then answers (and counts) the read. A value that does not
// decode is false too, and Get returns the error.
//
// Cached neither keeps key nor lets it escape, so a caller may build the
// key on its stack (a short string concatenation or conversion whose
// result stays local), and it takes no loader: a hit allocates nothing.
func (t Typed[T]) Cached(key string) (T, bool) {
	var zero T
	b, ok := t.R.peek(key, nil)
	if !ok {
		return zero, false
	}
	v, err := t.decode(key, b)
	if err != nil {
		return zero, false
	}
	return v, true
}

// Unlock is Region.UnlockWith with v, the row a committed update wrote.
func (t Typed[T]) Unlock(ctx context.Context, key string, v T, spaces ...string) error {
	b, err := msgpack.Marshal(&v)
	if err != nil {
		return errors.Join(fmt.Errorf("l2cache: region %s: encoding %q: %w", t.R.name, key, err), t.R.Unlock(ctx, key, spaces...))
	}
	return t.R.UnlockWith(ctx, key, b, spaces...)
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
	return t.decode(key, b)
}

// decode returns the T that b encodes, from the region's decoded values
// when b is the very value they were decoded from.
func (t Typed[T]) decode(key string, b []byte) (T, error) {
	if d, ok := t.R.decoded.load(key, b); ok {
		if v, ok := d.(T); ok {
			return v, nil
		}
	}
	var v T
	if err := msgpack.Unmarshal(b, &v); err != nil {
		var zero T
		return zero, fmt.Errorf("l2cache: region %s: decoding %q: %w", t.R.name, strings.Clone(key), err)
	}
	t.R.decoded.store(key, b, v)
	return v, nil
}
