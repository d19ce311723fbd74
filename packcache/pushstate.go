package packcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// ErrCorrupt is wrapped when a repository's record in the Store cannot be
// decoded.
var ErrCorrupt = errors.New("packcache: corrupt generation record")

// Bounds of a generation record: a repository has at most maxMarkers
// pushes in progress at once (more are refused until some end or expire)
// and a marker's strings are short.
const (
	maxMarkers     = 64
	maxMarkerField = 256
)

// marker is one push in progress, as recorded in the Store. Seq goes up
// with every renewal; readers time a marker by how long they have seen
// the same (ID, Seq).
type marker struct {
	ID   string `json:"id"`
	Node string `json:"node,omitempty"` // who pushes, for people reading the store
	Seq  uint64 `json:"seq"`
}

// pushState is the value stored under a repository's generation key; the
// key's version is the generation. A record with no markers is a
// repository no push is moving.
type pushState struct {
	Pushes []marker `json:"pushes,omitempty"`
}

// legacyValue is what nodes before push markers wrote: a record with no
// markers.
var legacyValue = []byte{1}

// decodeState reads a generation record. An absent key, the legacy value
// and "{}" have no markers; anything that is not a well-formed record
// within the bounds is ErrCorrupt.
func decodeState(b []byte) (pushState, error) {
	var st pushState
	if len(b) == 0 || bytes.Equal(b, legacyValue) {
		return st, nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&st); err != nil {
		return pushState{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if d.More() {
		return pushState{}, fmt.Errorf("%w: data after the record", ErrCorrupt)
	}
	if err := st.check(); err != nil {
		return pushState{}, err
	}
	return st, nil
}

// check enforces the bounds and unique, non-empty marker IDs.
func (st *pushState) check() error {
	if len(st.Pushes) > maxMarkers {
		return fmt.Errorf("%w: %d push markers, at most %d", ErrCorrupt, len(st.Pushes), maxMarkers)
	}
	for i, m := range st.Pushes {
		if m.ID == "" || len(m.ID) > maxMarkerField || len(m.Node) > maxMarkerField {
			return fmt.Errorf("%w: push marker %d: bad id or node", ErrCorrupt, i)
		}
		if st.index(m.ID) != i {
			return fmt.Errorf("%w: push marker %q twice", ErrCorrupt, m.ID)
		}
	}
	return nil
}

func (st pushState) encode() []byte {
	b, err := json.Marshal(st)
	if err != nil {
		panic(err) // strings and integers always marshal
	}
	return b
}

// index is the position of the marker with id, or -1.
func (st *pushState) index(id string) int {
	return slices.IndexFunc(st.Pushes, func(m marker) bool { return m.ID == id })
}

// without returns the record less the markers whose IDs are in ids.
func (st pushState) without(ids ...string) pushState {
	out := pushState{}
	for _, m := range st.Pushes {
		if !slices.Contains(ids, m.ID) {
			out.Pushes = append(out.Pushes, m)
		}
	}
	return out
}
