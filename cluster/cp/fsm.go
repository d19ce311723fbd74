package cp

import (
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"
)

// op is a command's operation.
type op uint8

const (
	opPut op = iota + 1
	opCAS
	opDelete
	opAcquire
	opRenew
	opRelease
)

// command is one replicated write, msgpack-encoded in a raft log entry.
type command struct {
	Op    op     `msgpack:"o"`
	Key   string `msgpack:"k,omitempty"`
	Value []byte `msgpack:"v,omitempty"`
	// Expect is the version a CAS or conditional delete requires; for a
	// delete, HasExpect says whether there is a condition.
	Expect    uint64 `msgpack:"e,omitempty"`
	HasExpect bool   `msgpack:"he,omitempty"`
	// Lease operations: the lease's name is Key.
	Holder string        `msgpack:"h,omitempty"`
	TTL    time.Duration `msgpack:"t,omitempty"`
	Token  uint64        `msgpack:"tk,omitempty"`
	// Fence makes a write conditional on a lease token being current.
	FenceLease string `msgpack:"fl,omitempty"`
	FenceToken uint64 `msgpack:"ft,omitempty"`
	// Now is the proposing leader's clock, the only time the state machine
	// knows: lease expiry is judged by it, identically on every replica.
	Now int64 `msgpack:"n"`
}

// result is what applying a command returns. Code is empty on success.
type result struct {
	Code    string `msgpack:"c,omitempty"`
	Msg     string `msgpack:"m,omitempty"`
	Version uint64 `msgpack:"v,omitempty"`
	Token   uint64 `msgpack:"t,omitempty"`
}

// entry is a stored value.
type entry struct {
	Value   []byte `msgpack:"v"`
	Version uint64 `msgpack:"r"`
}

// lease is a held lease.
type lease struct {
	Holder  string `msgpack:"h"`
	Token   uint64 `msgpack:"t"`
	Expires int64  `msgpack:"x"` // unix nanoseconds, by the proposing leader's clock
}

// fsm is the replicated state machine: keys with versions, and leases.
// Apply is a pure function of the state and the log entry (its index is the
// new version and the fencing token), so every replica computes the same.
type fsm struct {
	mu     sync.RWMutex
	data   map[string]entry
	leases map[string]lease

	// onApply, if set, is told of every change in commit order, with the
	// lock released. It must not block.
	onApply func([]Event)
}

func newFSM() *fsm {
	return &fsm{data: map[string]entry{}, leases: map[string]lease{}}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	var cmd command
	if err := msgpack.Unmarshal(l.Data, &cmd); err != nil {
		return result{Code: codeBadCommand, Msg: err.Error()}
	}
	f.mu.Lock()
	res, events := f.apply(l.Index, &cmd)
	f.mu.Unlock()
	if len(events) > 0 && f.onApply != nil {
		f.onApply(events)
	}
	return res
}

func (f *fsm) apply(index uint64, c *command) (result, []Event) {
	if c.FenceLease != "" {
		if l, ok := f.leases[c.FenceLease]; !ok || l.Token != c.FenceToken || l.Expires <= c.Now {
			return result{Code: codeFenced, Msg: "lease " + c.FenceLease + " is not held with that token"}, nil
		}
	}
	switch c.Op {
	case opPut:
		return f.put(index, c.Key, c.Value)
	case opCAS:
		if cur := f.data[c.Key].Version; cur != c.Expect {
			return mismatch(c.Key, c.Expect, cur), nil
		}
		return f.put(index, c.Key, c.Value)
	case opDelete:
		cur, ok := f.data[c.Key]
		if c.HasExpect && cur.Version != c.Expect {
			return mismatch(c.Key, c.Expect, cur.Version), nil
		}
		if !ok {
			return result{}, nil
		}
		delete(f.data, c.Key)
		return result{Version: index}, []Event{{Key: c.Key, Version: index, Deleted: true}}
	case opAcquire:
		return f.acquire(index, c), nil
	case opRenew:
		l, ok := f.leases[c.Key]
		if !ok || l.Holder != c.Holder || l.Token != c.Token || l.Expires <= c.Now {
			return result{Code: codeLeaseLost, Msg: "lease " + c.Key + " is no longer held by " + c.Holder}, nil
		}
		l.Expires = c.Now + int64(c.TTL)
		f.leases[c.Key] = l
		return result{Token: l.Token}, nil
	case opRelease:
		l, ok := f.leases[c.Key]
		if !ok || l.Holder != c.Holder || l.Token != c.Token {
			return result{Code: codeLeaseLost, Msg: "lease " + c.Key + " is not held by " + c.Holder}, nil
		}
		delete(f.leases, c.Key)
		return result{Token: l.Token}, nil
	}
	return result{Code: codeBadCommand, Msg: "unknown operation"}, nil
}

func (f *fsm) put(index uint64, key string, value []byte) (result, []Event) {
	f.data[key] = entry{Value: value, Version: index}
	return result{Version: index}, []Event{{Key: key, Value: value, Version: index}}
}

func (f *fsm) acquire(index uint64, c *command) result {
	if l, ok := f.leases[c.Key]; ok && l.Expires > c.Now && l.Holder != c.Holder {
		return result{Code: codeLeaseHeld, Msg: "lease " + c.Key + " is held by " + l.Holder, Token: l.Token}
	}
	// The log index increases with every acquisition of any lease, so it
	// serves as a fencing token.
	f.leases[c.Key] = lease{Holder: c.Holder, Token: index, Expires: c.Now + int64(c.TTL)}
	return result{Token: index}
}

func mismatch(key string, want, have uint64) result {
	return result{Code: codeVersionMismatch, Version: have,
		Msg: "key " + quote(key) + " is at version " + u64(have) + ", not " + u64(want)}
}

// get reads one key from local state.
func (f *fsm) get(key string) (entry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	e, ok := f.data[key]
	return e, ok
}

// list reads the keys under a prefix, sorted.
func (f *fsm) list(prefix string) []KV {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []KV
	for k, e := range f.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, KV{Key: k, Value: e.Value, Version: e.Version})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// snapshotState is the whole state, as written to a snapshot.
type snapshotState struct {
	Data   map[string]entry `msgpack:"d"`
	Leases map[string]lease `msgpack:"l"`
}

// Snapshot implements raft.FSM: it copies the maps (values are never
// mutated in place, so a shallow copy is enough).
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := snapshotState{Data: make(map[string]entry, len(f.data)), Leases: make(map[string]lease, len(f.leases))}
	for k, v := range f.data {
		st.Data[k] = v
	}
	for k, v := range f.leases {
		st.Leases[k] = v
	}
	return &fsmSnapshot{st: st}, nil
}

// Restore implements raft.FSM. The watches are told of every key that
// changed, as if the difference had been applied: a follower that
// installs the leader's snapshot, or a cluster restored from a file,
// keeps its watchers current.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st snapshotState
	if err := msgpack.NewDecoder(rc).Decode(&st); err != nil {
		return err
	}
	if st.Data == nil {
		st.Data = map[string]entry{}
	}
	if st.Leases == nil {
		st.Leases = map[string]lease{}
	}
	f.mu.Lock()
	events := diff(f.data, st.Data)
	f.data, f.leases = st.Data, st.Leases
	f.mu.Unlock()
	if len(events) > 0 && f.onApply != nil {
		f.onApply(events)
	}
	return nil
}

// diff lists the changes from old to new as events, sorted by key.
func diff(old, new map[string]entry) []Event {
	var out []Event
	for k, e := range new {
		if o, ok := old[k]; !ok || o.Version != e.Version {
			out = append(out, Event{Key: k, Value: e.Value, Version: e.Version})
		}
	}
	for k, o := range old {
		if _, ok := new[k]; !ok {
			out = append(out, Event{Key: k, Version: o.Version, Deleted: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

type fsmSnapshot struct{ st snapshotState }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := msgpack.NewEncoder(sink).Encode(&s.st); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
