package l2cache

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func codecOps() []distOp {
	long := strings.Repeat("k", 300)
	return []distOp{
		{},
		{Kind: kindGet, Partition: 270, Region: "pr", Key: "42", Spaces: []string{"pull_request", "repository"}},
		{Kind: kindGet, Near: true, Partition: 3, Region: "pr", Key: "43"},
		{Kind: kindPut, Partition: 7, Region: "repo", Key: long, Value: []byte("state"), Ticket: ticket{Owner: "n2", Stamp: 1 << 40}},
		{Kind: kindPut, Region: "r", Key: "empty", Value: []byte{}, Ticket: ticket{Owner: "n1", Stamp: 3}},
		{Kind: kindPut, Partition: 1, Region: "r", Key: "k", Value: bytes.Repeat([]byte{7}, 70000), Stamp: 300, Seq: 65536, Epoch: 1<<32 + 1},
		{Kind: kindInvalidate, Region: strings.Repeat("r", 40), Spaces: make([]string, 20)},
		{Kind: kindUnlock, Region: "pr", Key: "9", Spaces: []string{"comments"}, Upd: updateID{Inc: 1 << 63, Seq: 7, Done: 5}},
		{Kind: kindGet, Region: "q", Key: "list", Spaces: []string{"comments"}, Want: true, Need: []updateID{{Inc: 3, Seq: 1}, {Inc: 1<<64 - 1, Seq: 1 << 40}}},
		{Kind: kindGet, Region: "q", Key: "list", Want: true},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for i, o := range codecOps() {
		b := appendOp(nil, &o)
		got, err := decodeOp(b)
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, o) {
			t.Fatalf("op %d: decoded %+v, want %+v", i, got, o)
		}
		// Any msgpack reader can read it: the generic decoder sees an
		// array of the same length.
		var generic []any
		if err := msgpack.Unmarshal(b, &generic); err != nil || len(generic) != opFields {
			t.Fatalf("op %d: generic msgpack read %d fields, err %v", i, len(generic), err)
		}
	}
	replies := []distReply{
		{},
		{NotOwner: true, Epoch: 9},
		{Hit: true, Value: []byte("v")},
		{Hit: true, Value: []byte{}},
		{Ticket: ticket{Owner: "n3", Stamp: 77}, Floor: 76},
		{Refused: true},
		{SpacesAt: []string{"n1", "n2", "n3"}},
		{Hit: true, Value: []byte("v"), Vouched: true},
		{SpacesAt: []string{"n1"}, Vouched: true},
	}
	for i, r := range replies {
		got, err := decodeReply(appendReply(nil, &r))
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("reply %d: decoded %+v, want %+v", i, got, r)
		}
	}
}

func TestCodecRejectsGarbage(t *testing.T) {
	good := appendOp(nil, &distOp{Kind: kindGet, Region: "pr", Key: "1", Spaces: []string{"a"}})
	cases := map[string][]byte{
		"empty":          nil,
		"not an array":   {0xc0},
		"wrong length":   append([]byte{0x92}, good[1:]...),
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(append([]byte{}, good...), 0),
		"huge array":     append([]byte{0x9c, 1, 0xc2, 0, 0xa0, 0xa0, 0xc0}, 0xdd, 0xff, 0xff, 0xff, 0xff),
		"string as uint": append([]byte{0x9c, 0xa0}, good[2:]...),
		"reserved space": appendOp(nil, &distOp{Kind: kindGet, Region: "pr", Key: "1", Spaces: []string{"\x00x"}}),
		"short name":     appendOp(nil, &distOp{Kind: kindGet, Region: "pr", Key: "1", Spaces: []string{nameUpd + "12345678"}}),
	}
	for name, b := range cases {
		if _, err := decodeOp(b); !errors.Is(err, ErrCodec) {
			t.Errorf("%s: err = %v, want ErrCodec", name, err)
		}
	}
	if _, err := decodeReply([]byte{0x98, 0xc2, 0xcf, 1}); !errors.Is(err, ErrCodec) {
		t.Errorf("truncated reply: err = %v", err)
	}
	withAt := appendReply(nil, &distReply{SpacesAt: []string{"n1"}})
	if _, err := decodeReply(withAt[:len(withAt)-1]); !errors.Is(err, ErrCodec) {
		t.Errorf("truncated SpacesAt: err = %v", err)
	}
	spaces := appendSpaces(nil, 5, []string{"comments", "pull_requests"}, updateID{Inc: 1, Seq: 2, Done: 1})
	for name, b := range map[string][]byte{
		"empty":          nil,
		"truncated":      spaces[:len(spaces)-1],
		"trailing bytes": append(append([]byte{}, spaces...), 0),
		"huge array":     {0x92, 5, 0xdd, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, _, _, err := decodeSpaces(b); !errors.Is(err, ErrCodec) {
			t.Errorf("query-space update, %s: err = %v, want ErrCodec", name, err)
		}
	}
}

// The query-space update sent straight to a member (syncSpaces) reads
// back as written.
func TestSpacesCodecRoundTrip(t *testing.T) {
	id := updateID{Inc: 1<<64 - 1, Seq: 12, Done: 9}
	for _, spaces := range [][]string{{}, {"comments"}, {"pull_requests", "repositories", strings.Repeat("s", 300)}} {
		at, got, gotID, err := decodeSpaces(appendSpaces(nil, 1<<60, spaces, id))
		if err != nil || at != 1<<60 || !reflect.DeepEqual(got, spaces) || gotID != id {
			t.Fatalf("%q: decoded %d %q %+v (%v)", spaces, at, got, gotID, err)
		}
	}
	// A node of an older build sends [sent, [space…]]: read, unnamed.
	old := []byte{0x92, 5, 0x91, 0xa8}
	old = append(old, "comments"...)
	at, got, gotID, err := decodeSpaces(old)
	if err != nil || at != 5 || !reflect.DeepEqual(got, []string{"comments"}) || gotID != (updateID{}) {
		t.Fatalf("older update: decoded %d %q %+v (%v)", at, got, gotID, err)
	}
}

func FuzzDecodeOp(f *testing.F) {
	for _, o := range codecOps() {
		f.Add(appendOp(nil, &o))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeOp(b)
		if err != nil {
			return
		}
		// What decodes encodes back to something that decodes the same.
		again, err := decodeOp(appendOp(nil, &o))
		if err != nil || !reflect.DeepEqual(normal(again), normal(o)) {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", o, again, err)
		}
	})
}

// normal makes empty and nil Spaces compare equal.
func normal(o distOp) distOp {
	if len(o.Spaces) == 0 {
		o.Spaces = nil
	}
	return o
}

func BenchmarkCodec(b *testing.B) {
	o := distOp{Kind: kindGet, Partition: 100, Region: "pull_request", Key: "123456"}
	r := distReply{Hit: true, Value: make([]byte, 200)}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ob, _ := decodeOp(appendOp(nil, &o))
			_ = ob
			rb, _ := decodeReply(appendReply(nil, &r))
			_ = rb
		}
	})
	b.Run("reflect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ob, _ := msgpack.Marshal(&o)
			var o2 distOp
			_ = msgpack.Unmarshal(ob, &o2)
			rb, _ := msgpack.Marshal(&r)
			var r2 distReply
			_ = msgpack.Unmarshal(rb, &r2)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	for _, r := range []distReply{{}, {Hit: true, Value: []byte("v"), Vouched: true}, {SpacesAt: []string{"n1", "n2"}}, {Ticket: ticket{Owner: "n3", Stamp: 77}, Floor: 76}} {
		f.Add(appendReply(nil, &r))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReply(b)
		if err != nil {
			return
		}
		again, err := decodeReply(appendReply(nil, &r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", r, again, err)
		}
	})
}

func FuzzDecodeSpaces(f *testing.F) {
	f.Add(appendSpaces(nil, 5, []string{"comments"}, updateID{Inc: 1, Seq: 2, Done: 1}))
	f.Add([]byte{0x92, 5, 0x91, 0xa1, 'c'}) // an older build's
	f.Fuzz(func(t *testing.T, b []byte) {
		at, spaces, id, err := decodeSpaces(b)
		if err != nil {
			return
		}
		at2, spaces2, id2, err := decodeSpaces(appendSpaces(nil, at, spaces, id))
		if err != nil || at2 != at || !reflect.DeepEqual(spaces2, spaces) || id2 != id {
			t.Fatalf("re-encoding changed %d %q %+v into %d %q %+v (%v)", at, spaces, id, at2, spaces2, id2, err)
		}
	})
}
