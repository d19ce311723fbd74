package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	frames := []Frame{
		{Kind: KindRequest, ID: 1, Type: "bus", Body: []byte("x")},
		{Kind: KindResponse, ID: 300, Body: nil},
		{Kind: KindError, ID: 70000, Body: []byte("boom")},
		{Kind: KindOneway, ID: 1 << 33, Type: strings.Repeat("t", MaxTypeLen), Body: bytes.Repeat([]byte{7}, 300)},
		{Kind: KindHello, Body: bytes.Repeat([]byte{1}, 70000)},
		{Kind: KindRequest, ID: 9, Timeout: 1500 * time.Millisecond, Type: "cp.apply"},
	}
	var buf []byte
	for i := range frames {
		var err error
		if buf, err = AppendFrame(buf, &frames[i], DefaultMaxFrameSize); err != nil {
			t.Fatal(err)
		}
	}
	r := bytes.NewReader(buf)
	for i, want := range frames {
		got, err := ReadFrame(r, DefaultMaxFrameSize)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.Kind != want.Kind || got.ID != want.ID || got.Type != want.Type ||
			got.Timeout != want.Timeout || !bytes.Equal(got.Body, want.Body) {
			t.Fatalf("frame %d: got %+v, want %+v", i, got, want)
		}
		if EncodedLen(&got) != EncodedLen(&want) {
			t.Fatalf("frame %d: length changed", i)
		}
	}
	if _, err := ReadFrame(r, DefaultMaxFrameSize); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestFrameRejects(t *testing.T) {
	good, _ := AppendFrame(nil, &Frame{Kind: KindRequest, ID: 5, Type: "x", Body: []byte("abc")}, 1<<20)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"oversized length", []byte{0x7f, 0xff, 0xff, 0xff}, "exceeds the limit"},
		{"cut in body", good[:len(good)-1], "unexpected EOF"},
		{"cut in header", good[:2], "unexpected EOF"},
		{"not an array", []byte{0, 0, 0, 1, 0x01}, "expected a 5-element array"},
		{"empty body", []byte{0, 0, 0, 0}, "need 1 bytes"},
		{"unknown kind", []byte{0, 0, 0, 5, 0x95, 9, 0, 0, 0xa0, 0xc0}[:9], "need"},
		{"kind 9", []byte{0, 0, 0, 6, 0x95, 9, 0, 0, 0xa0, 0xc0}, "unknown kind 9"},
		{"kind 0", []byte{0, 0, 0, 6, 0x95, 0, 0, 0, 0xa0, 0xc0}, "unknown kind 0"},
		{"string id", []byte{0, 0, 0, 6, 0x95, 1, 0xa0, 0, 0xa0, 0xc0}, "id: expected an unsigned integer"},
		{"negative id", []byte{0, 0, 0, 6, 0x95, 1, 0xff, 0, 0xa0, 0xc0}, "id: expected an unsigned integer"},
		{"bin type", []byte{0, 0, 0, 7, 0x95, 1, 0, 0, 0xc4, 0, 0xc0}, "type: expected a string"},
		{"body lies", []byte{0, 0, 0, 8, 0x95, 1, 0, 0, 0xa0, 0xc6, 0xff, 0xff}, "body: need 4 bytes"},
		{"body too long", []byte{0, 0, 0, 8, 0x95, 1, 0, 0, 0xa0, 0xc4, 9, 1}, "body: need 9 bytes"},
		{"trailing", []byte{0, 0, 0, 7, 0x95, 1, 0, 0, 0xa0, 0xc0, 0xc0}, "1 trailing bytes"},
		{"timeout overflow", []byte{0, 0, 0, 14, 0x95, 1, 0, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa0, 0xc0}, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tc.in), 1<<20)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0x7f, 0xff, 0xff, 0xff}), 1<<20); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized: %v does not wrap ErrFrameTooLarge", err)
	}
}

func TestAppendFrameRefuses(t *testing.T) {
	if _, err := AppendFrame(nil, &Frame{Kind: 0}, 100); err == nil {
		t.Fatal("kind 0 encoded")
	}
	if _, err := AppendFrame(nil, &Frame{Kind: KindOneway, Type: strings.Repeat("x", 256)}, 1000); err == nil {
		t.Fatal("long type encoded")
	}
	if _, err := AppendFrame(nil, &Frame{Kind: KindOneway, Body: make([]byte, 200)}, 100); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
}

// FuzzReadFrame feeds arbitrary bytes to the decoder: it must return a frame
// or an error, never panic, and a frame it accepts must re-encode to the
// same length and decode to the same frame.
func FuzzReadFrame(f *testing.F) {
	seeds := []Frame{
		{Kind: KindHello, Body: []byte("node-1")},
		{Kind: KindRequest, ID: 42, Timeout: time.Second, Type: "bus.sync", Body: []byte{0x93, 1, 2, 3}},
		{Kind: KindResponse, ID: 42, Body: bytes.Repeat([]byte("r"), 300)},
		{Kind: KindError, ID: 1 << 40, Body: []byte("no handler")},
		{Kind: KindOneway, Type: strings.Repeat("t", 40), Body: make([]byte, 70000)},
	}
	for i := range seeds {
		b, err := AppendFrame(nil, &seeds[i], DefaultMaxFrameSize)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, 0x95, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, err := ReadFrame(bytes.NewReader(in), 1<<16)
		if err != nil {
			return
		}
		out, err := AppendFrame(nil, &fr, 1<<16)
		if err != nil {
			t.Fatalf("decoded frame does not re-encode: %v", err)
		}
		again, err := ReadFrame(bytes.NewReader(out), 1<<16)
		if err != nil || again.Kind != fr.Kind || again.ID != fr.ID || again.Type != fr.Type ||
			again.Timeout != fr.Timeout || !bytes.Equal(again.Body, fr.Body) {
			t.Fatalf("re-decoded %+v (%v), want %+v", again, err, fr)
		}
	})
}
