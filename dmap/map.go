package dmap

import (
	"context"
	"time"
)

// Map is a named map: its keys are name+":"+key in the keyspace (the
// default map, "", uses keys as they are).
type Map struct {
	d    *DMap
	name string
}

// Map returns the map called name.
func (d *DMap) Map(name string) Map { return Map{d, name} }

func (m Map) key(k string) string {
	if m.name == "" {
		return k
	}
	return m.name + ":" + k
}

func (m Map) one(ctx context.Context, o Op) (Result, error) {
	rs, err := m.d.Do(ctx, []Op{o}, DoOptions{})
	if err != nil {
		return Result{}, err
	}
	return rs[0], rs[0].Err
}

// Get returns key's value, and false if it has none.
func (m Map) Get(ctx context.Context, key string) ([]byte, bool, error) {
	r, err := m.one(ctx, Op{Code: CodeGet, Key: m.key(key)})
	return r.Value, err == nil && !r.Nil, err
}

// Put sets key's value, expiring after ttl (0: never).
func (m Map) Put(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	o := Op{Code: CodeSet, Key: m.key(key), Args: [][]byte{v}}
	if ttl > 0 {
		o.Flags, o.N = FlagExpire|FlagRelative, ttl.Milliseconds()
	}
	_, err := m.one(ctx, o)
	return err
}

// Delete removes key and reports whether it existed.
func (m Map) Delete(ctx context.Context, key string) (bool, error) {
	r, err := m.one(ctx, Op{Code: CodeDel, Key: m.key(key)})
	return r.Int == 1, err
}
