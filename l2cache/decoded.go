package l2cache

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
	"unsafe"
)

// decodedSlots is the number of decoded values a region keeps for Typed.
const decodedSlots = 1024

// decodedMemo keeps the decoded form of recently read values, so that a
// hit on an entry read before costs no decoding: a fixed table of slots
// indexed by a hash of the key, each holding the key, the encoded value it
// was decoded from and the decoded value; a collision replaces the slot.
// A slot is used only if the value the cache returned is the very one it
// was decoded from (same bytes in memory: cached values are never
// modified in place, and the slot keeps them alive, so their memory
// cannot be reused for another). The memory it holds is bounded by the
// slot count, whatever the cache evicts.
type decodedMemo struct {
	seed  maphash.Seed
	slots [decodedSlots]atomic.Pointer[decodedSlot]
}

type decodedSlot struct {
	key string
	raw []byte
	v   any
}

func (m *decodedMemo) slot(key string) *atomic.Pointer[decodedSlot] {
	return &m.slots[maphash.String(m.seed, key)%decodedSlots]
}

// load returns the value decoded from raw for key, if it is kept.
func (m *decodedMemo) load(key string, raw []byte) (any, bool) {
	s := m.slot(key).Load()
	if s == nil || s.key != key || len(s.raw) != len(raw) || unsafe.SliceData(s.raw) != unsafe.SliceData(raw) {
		return nil, false
	}
	return s.v, true
}

// store keeps v, decoded from raw, for key. It keeps a copy of key, so
// that the caller's may live on its stack.
func (m *decodedMemo) store(key string, raw []byte, v any) {
	if len(raw) == 0 {
		return // no identity to check against
	}
	m.slot(key).Store(&decodedSlot{key: strings.Clone(key), raw: raw, v: v})
}
