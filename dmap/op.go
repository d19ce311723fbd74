package dmap

import (
	"errors"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
)

// Code is what an Op does. Every Op names one key (except Scan, Size and
// Flush, which name a partition) and runs at the key's owner, atomically
// with the other Ops of its partition in the same call.
type Code uint8

const (
	CodeGet     Code = iota + 1 // Value, or Nil; ErrWrongType for a hash
	CodeSet                     // Args[0]; FlagNX/XX/KeepTTL/Get, FlagExpire with N: Int 1 if set (Nil if not); with FlagGet, the old Value
	CodeGetDel                  // Value (Nil if none) and delete
	CodeGetEx                   // Value; FlagExpire with N sets the deadline, FlagPersist removes it
	CodeDel                     // Int 1 if the key existed
	CodeExists                  // Int 1 if the key exists
	CodeIncrBy                  // N added to an integer string: Int the result
	CodeAppend                  // Args[0] appended: Int the new length
	CodeStrLen                  // Int the string's length
	CodeExpire                  // FlagExpire with N, FlagNX/XX/GT/LT: Int 1 if set
	CodeTTL                     // Int: milliseconds left, -1 without deadline, -2 without key
	CodePersist                 // Int 1 if a deadline was removed
	CodeType                    // Value "string", "hash" or "none"
	CodeHSet                    // Args field, value pairs: Int fields added
	CodeHGet                    // Args[0]: Value or Nil
	CodeHMGet                   // Args fields: Values (nil for a missing field)
	CodeHDel                    // Args fields: Int fields removed
	CodeHGetAll                 // Values field, value, ... in insertion order
	CodeHLen                    // Int
	CodeHIncrBy                 // Args[0] field, N delta: Int the result
	CodeScan                    // see Scan
	CodeSize                    // Int: keys in the partition; with N > 0 those of slot N-1; FlagExpire: only those with a deadline
	CodeFlush                   // empty the partition
	CodeHold                    // register the caller for every change of the partition (FlagPersist: unregister)
	codeMax
)

// Op flags.
const (
	FlagNX       uint32 = 1 << iota // only if the key (or deadline) does not exist
	FlagXX                          // only if it exists
	FlagKeepTTL                     // SET keeps the deadline
	FlagGet                         // SET returns the old value
	FlagGT                          // EXPIRE only to a later deadline
	FlagLT                          // EXPIRE only to an earlier deadline
	FlagPersist                     // GETEX removes the deadline
	FlagExpire                      // N is a deadline (unix ms), or with FlagRelative a TTL (ms)
	FlagRelative                    // N is relative to the owner's clock
)

// Op is one operation on one key.
type Op struct {
	Code  Code
	Flags uint32
	N, M  int64
	Key   string
	Args  [][]byte
}

// Result is an Op's answer. Err is one of the package's sentinel errors
// (ErrWrongType, ErrNotInteger, ErrOverflow, ErrSyntax) or nil.
type Result struct {
	Err    error
	Nil    bool
	Int    int64
	Value  []byte
	Values [][]byte
}

// Errors in a Result. Their texts are what Redis answers.
var (
	ErrWrongType  = errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")
	ErrNotInteger = errors.New("ERR value is not an integer or out of range")
	ErrHashNotInt = errors.New("ERR hash value is not an integer")
	ErrOverflow   = errors.New("ERR increment or decrement would overflow")
	ErrSyntax     = errors.New("ERR syntax error")
)

var resultErrs = []error{nil, ErrWrongType, ErrNotInteger, ErrHashNotInt, ErrOverflow, ErrSyntax}

func errCode(err error) uint64 {
	for i, e := range resultErrs {
		if e == err {
			return uint64(i)
		}
	}
	return uint64(len(resultErrs) - 1)
}

// entry is a key's state: a string or a hash, and its deadline.
type entry struct {
	str    []byte
	hash   []field // nil for a string; insertion order, as Redis's small hashes
	expire int64   // unix ms; 0: none
	pos    uint64  // scan position (hash of the key)
}

type field struct {
	k string
	v []byte
}

func (e *entry) isHash() bool { return e.hash != nil }

func (e *entry) cost(key string) int64 {
	c := int64(len(key) + len(e.str) + 64)
	for _, f := range e.hash {
		c += int64(len(f.k) + len(f.v) + 32)
	}
	return c
}

func (e *entry) hget(k string) ([]byte, bool) {
	for i := range e.hash {
		if e.hash[i].k == k {
			return e.hash[i].v, true
		}
	}
	return nil, false
}

// hset sets a field and reports whether it is new.
func (e *entry) hset(k string, v []byte) bool {
	for i := range e.hash {
		if e.hash[i].k == k {
			e.hash[i].v = v
			return false
		}
	}
	e.hash = append(e.hash, field{k, v})
	return true
}

func (e *entry) hdel(k string) bool {
	for i := range e.hash {
		if e.hash[i].k == k {
			e.hash = slices.Delete(e.hash, i, i+1)
			return true
		}
	}
	return false
}

// clone copies an entry so that a change to one does not show in the
// other (a replication record keeps the state it was taken with).
func (e *entry) clone() *entry {
	c := *e
	if e.hash != nil {
		c.hash = slices.Clone(e.hash)
	}
	return &c
}

// scanPos is a key's scan position: 54 bits of its FNV-1a hash, fixed for
// the key wherever it is held.
func scanPos(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64() >> 10
}

const posBits = 54

// keyspace is one partition's keys: what an Op sees.
type keyspace interface {
	get(key string) *entry
	put(key string, e *entry)
	del(key string) bool
	expired(key string)
}

// live returns key's entry unless its deadline has passed (then it is
// deleted and reported changed).
func live(ks keyspace, key string, now int64, changed *bool) *entry {
	e := ks.get(key)
	if e != nil && e.expire != 0 && e.expire <= now {
		ks.expired(key)
		*changed = true
		return nil
	}
	return e
}

// exec runs o on ks at time now (unix ms) and reports whether it changed
// o.Key. Scan, Size, Flush and Hold are the caller's.
func exec(ks keyspace, o *Op, now int64, r *Result) (changed bool) {
	e := live(ks, o.Key, now, &changed)
	switch o.Code {
	case CodeGet, CodeGetDel, CodeGetEx:
		switch {
		case e == nil:
			r.Nil = true
		case e.isHash():
			r.Err = ErrWrongType
		default:
			r.Value = e.str
			if o.Code == CodeGetDel {
				ks.del(o.Key)
				changed = true
			} else if o.Code == CodeGetEx && o.Flags&(FlagPersist|FlagExpire) != 0 {
				changed = setDeadline(ks, o.Key, e, o, now) || changed
			}
		}
	case CodeSet:
		changed = execSet(ks, e, o, now, r) || changed
	case CodeDel:
		if e != nil {
			ks.del(o.Key)
			r.Int, changed = 1, true
		}
	case CodeExists:
		if e != nil {
			r.Int = 1
		}
	case CodeIncrBy:
		changed = execIncr(ks, e, o, now, r) || changed
	case CodeAppend:
		switch {
		case e == nil:
			ks.put(o.Key, &entry{str: slices.Clone(o.Args[0]), pos: scanPos(o.Key)})
			r.Int, changed = int64(len(o.Args[0])), true
		case e.isHash():
			r.Err = ErrWrongType
		default:
			n := e.clone()
			n.str = append(slices.Clip(n.str), o.Args[0]...)
			ks.put(o.Key, n)
			r.Int, changed = int64(len(n.str)), true
		}
	case CodeStrLen:
		if e != nil && e.isHash() {
			r.Err = ErrWrongType
		} else if e != nil {
			r.Int = int64(len(e.str))
		}
	case CodeExpire:
		if e != nil && expireAllowed(e, o, deadline(o, now)) {
			r.Int, changed = 1, setDeadline(ks, o.Key, e, o, now) || changed
		}
	case CodeTTL:
		switch {
		case e == nil:
			r.Int = -2
		case e.expire == 0:
			r.Int = -1
		default:
			r.Int = e.expire - now
		}
	case CodePersist:
		if e != nil && e.expire != 0 {
			n := e.clone()
			n.expire = 0
			ks.put(o.Key, n)
			r.Int, changed = 1, true
		}
	case CodeType:
		switch {
		case e == nil:
			r.Value = []byte("none")
		case e.isHash():
			r.Value = []byte("hash")
		default:
			r.Value = []byte("string")
		}
	default:
		changed = execHash(ks, e, o, now, r) || changed
	}
	return changed
}

func deadline(o *Op, now int64) int64 {
	if o.Flags&FlagRelative != 0 {
		if o.N > math.MaxInt64-now {
			return math.MaxInt64
		}
		return now + o.N
	}
	return o.N
}

func expireAllowed(e *entry, o *Op, at int64) bool {
	switch {
	case o.Flags&FlagNX != 0:
		return e.expire == 0
	case o.Flags&FlagXX != 0 && e.expire == 0:
		return false
	case o.Flags&FlagGT != 0:
		return e.expire != 0 && at > e.expire
	case o.Flags&FlagLT != 0:
		return e.expire == 0 || at < e.expire
	}
	return true
}

// setDeadline applies o's deadline (or persist) to key; a deadline not
// after now deletes it.
func setDeadline(ks keyspace, key string, e *entry, o *Op, now int64) bool {
	if o.Flags&FlagPersist != 0 {
		if e.expire == 0 {
			return false
		}
		n := e.clone()
		n.expire = 0
		ks.put(key, n)
		return true
	}
	at := deadline(o, now)
	if at <= now {
		ks.del(key)
		return true
	}
	n := e.clone()
	n.expire = at
	ks.put(key, n)
	return true
}

func execSet(ks keyspace, e *entry, o *Op, now int64, r *Result) bool {
	if o.Flags&FlagGet != 0 {
		switch {
		case e == nil:
			r.Nil = true
		case e.isHash():
			r.Err = ErrWrongType
			return false
		default:
			r.Value = e.str
		}
	}
	if (o.Flags&FlagNX != 0 && e != nil) || (o.Flags&FlagXX != 0 && e == nil) {
		if o.Flags&FlagGet == 0 {
			r.Nil = true
		}
		return false
	}
	if o.Flags&FlagGet == 0 {
		r.Int = 1
	}
	n := &entry{str: o.Args[0], pos: scanPos(o.Key)}
	if o.Flags&FlagKeepTTL != 0 && e != nil {
		n.expire = e.expire
	}
	if o.Flags&FlagExpire != 0 {
		if n.expire = deadline(o, now); n.expire <= now {
			ks.del(o.Key)
			return true
		}
	}
	ks.put(o.Key, n)
	return true
}

func execIncr(ks keyspace, e *entry, o *Op, now int64, r *Result) bool {
	var cur int64
	if e != nil {
		if e.isHash() {
			r.Err = ErrWrongType
			return false
		}
		v, ok := ParseInt(e.str)
		if !ok {
			r.Err = ErrNotInteger
			return false
		}
		cur = v
	}
	if (o.N > 0 && cur > math.MaxInt64-o.N) || (o.N < 0 && cur < math.MinInt64-o.N) {
		r.Err = ErrOverflow
		return false
	}
	r.Int = cur + o.N
	n := &entry{str: strconv.AppendInt(nil, r.Int, 10), pos: scanPos(o.Key)}
	if e != nil {
		n.expire = e.expire
	}
	ks.put(o.Key, n)
	return true
}

func execHash(ks keyspace, e *entry, o *Op, now int64, r *Result) bool {
	if e != nil && !e.isHash() {
		r.Err = ErrWrongType
		return false
	}
	switch o.Code {
	case CodeHSet:
		n := &entry{hash: []field{}, pos: scanPos(o.Key)}
		if e != nil {
			n = e.clone()
		}
		for i := 0; i+1 < len(o.Args); i += 2 {
			if n.hset(string(o.Args[i]), o.Args[i+1]) {
				r.Int++
			}
		}
		ks.put(o.Key, n)
		return true
	case CodeHGet:
		v, ok := []byte(nil), false
		if e != nil {
			v, ok = e.hget(string(o.Args[0]))
		}
		r.Value, r.Nil = v, !ok
	case CodeHMGet:
		r.Values = make([][]byte, len(o.Args))
		for i, f := range o.Args {
			if e != nil {
				if v, ok := e.hget(string(f)); ok {
					r.Values[i] = nonNil(v)
				}
			}
		}
	case CodeHDel:
		if e == nil {
			return false
		}
		n := e.clone()
		for _, f := range o.Args {
			if n.hdel(string(f)) {
				r.Int++
			}
		}
		if r.Int == 0 {
			return false
		}
		if len(n.hash) == 0 {
			ks.del(o.Key)
		} else {
			ks.put(o.Key, n)
		}
		return true
	case CodeHGetAll:
		r.Values = [][]byte{}
		if e != nil {
			for _, f := range e.hash {
				r.Values = append(r.Values, []byte(f.k), nonNil(f.v))
			}
		}
	case CodeHLen:
		if e != nil {
			r.Int = int64(len(e.hash))
		}
	case CodeHIncrBy:
		return execHIncr(ks, e, o, r)
	}
	return false
}

func execHIncr(ks keyspace, e *entry, o *Op, r *Result) bool {
	var cur int64
	if e != nil {
		if v, ok := e.hget(string(o.Args[0])); ok {
			n, ok := ParseInt(v)
			if !ok {
				r.Err = ErrHashNotInt
				return false
			}
			cur = n
		}
	}
	if (o.N > 0 && cur > math.MaxInt64-o.N) || (o.N < 0 && cur < math.MinInt64-o.N) {
		r.Err = ErrOverflow
		return false
	}
	r.Int = cur + o.N
	n := &entry{hash: []field{}, pos: scanPos(o.Key)}
	if e != nil {
		n = e.clone()
	}
	n.hset(string(o.Args[0]), strconv.AppendInt(nil, r.Int, 10))
	ks.put(o.Key, n)
	return true
}

// nonNil makes an empty value distinguishable from a missing one.
func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// isWrite reports whether code may change the keyspace.
func (c Code) isWrite() bool {
	switch c {
	case CodeSet, CodeGetDel, CodeGetEx, CodeDel, CodeIncrBy, CodeAppend, CodeExpire, CodePersist,
		CodeHSet, CodeHDel, CodeHIncrBy, CodeFlush:
		return true
	}
	return false
}

// validate checks an Op's shape before it is sent or run.
func (o *Op) validate() error {
	need := 0
	switch o.Code {
	case CodeSet, CodeAppend, CodeHGet, CodeHIncrBy:
		need = 1
	case CodeHSet:
		if len(o.Args) == 0 || len(o.Args)%2 != 0 {
			return ErrSyntax
		}
	case CodeHMGet, CodeHDel:
		if len(o.Args) == 0 {
			return ErrSyntax
		}
	}
	if o.Code == 0 || o.Code >= codeMax || len(o.Args) < need {
		return ErrSyntax
	}
	return nil
}

// ParseInt parses an integer as Redis does (string2ll): an optional '-',
// then digits without a leading zero ("0" alone is zero), in range.
// "+1", " 1", "01" and "-0" are not integers.
func ParseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if v > (math.MaxUint64-uint64(c-'0'))/10 {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return int64(-v), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}
