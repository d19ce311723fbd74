package chaos

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// kv operations.
const (
	kvGet = iota
	kvPut
	kvCAS
)

// kvInput is one kv operation on one key.
type kvInput struct {
	Key    string
	Op     int
	Value  string // put, cas
	Expect uint64 // cas: the version it expects (0: the key is absent)
}

// kvOutput is its answer.
type kvOutput struct {
	Found    bool   // get
	Value    string // get
	Version  uint64 // get; put and cas when applied
	OK       bool   // put or cas applied
	Mismatch bool   // cas refused
	Unknown  bool   // no answer: it may have applied, later, or never
}

// kvState is one key in the model. A write whose outcome is unknown that
// the model lets apply leaves the version unknown; the next read adopts
// the version it reports.
type kvState struct {
	Exists         bool
	Value          string
	Version        uint64
	VersionUnknown bool
}

// kvModel is a register per key with versions: gets see the last applied
// write; puts and applied compare-and-sets give a version above the
// previous one; a compare-and-set applies exactly when its expected
// version is the key's.
var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: func(st, in, out any) (bool, any) {
		s, i, o := st.(kvState), in.(kvInput), out.(kvOutput)
		switch i.Op {
		case kvGet:
			if o.Found != s.Exists || o.Value != s.Value {
				return false, s
			}
			if !s.Exists {
				return true, s
			}
			if s.VersionUnknown {
				s.Version, s.VersionUnknown = o.Version, false
				return true, s
			}
			return o.Version == s.Version, s
		case kvPut:
			if o.Unknown {
				return true, kvState{Exists: true, Value: i.Value, VersionUnknown: true}
			}
			if !s.VersionUnknown && o.Version <= s.Version {
				return false, s
			}
			return true, kvState{Exists: true, Value: i.Value, Version: o.Version}
		default: // cas
			cur := uint64(0)
			if s.Exists {
				cur = s.Version
			}
			matches := (s.Exists && s.VersionUnknown) || cur == i.Expect
			switch {
			case o.OK:
				if !matches || (!s.VersionUnknown && o.Version <= s.Version) {
					return false, s
				}
				return true, kvState{Exists: true, Value: i.Value, Version: o.Version}
			case o.Mismatch:
				return (s.Exists && s.VersionUnknown) || cur != i.Expect, s
			default: // unknown: when it could apply, it applied (else it is a no-op, and the model places it after everything)
				if !matches {
					return true, s
				}
				return true, kvState{Exists: true, Value: i.Value, VersionUnknown: true}
			}
		}
	},
	Equal: func(a, b any) bool { return a.(kvState) == b.(kvState) },
	DescribeOperation: func(in, out any) string {
		i, o := in.(kvInput), out.(kvOutput)
		res := fmt.Sprintf("ok=%v v=%d", o.OK, o.Version)
		switch {
		case o.Unknown:
			res = "unknown"
		case o.Mismatch:
			res = "mismatch"
		}
		switch i.Op {
		case kvGet:
			if !o.Found {
				return fmt.Sprintf("get(%s) -> not found", i.Key)
			}
			return fmt.Sprintf("get(%s) -> %q v=%d", i.Key, o.Value, o.Version)
		case kvPut:
			return fmt.Sprintf("put(%s, %q) -> %s", i.Key, i.Value, res)
		default:
			return fmt.Sprintf("cas(%s, expect v=%d, %q) -> %s", i.Key, i.Expect, i.Value, res)
		}
	},
}
