package pktline

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

type pkt struct {
	t Type
	p string
}

func readAll(in []byte) ([]pkt, error) {
	r := NewReader(bytes.NewReader(in))
	var out []pkt
	for {
		t, p, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, pkt{t, string(p)})
	}
}

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []pkt
		err  error
	}{
		{"empty", "", nil, nil},
		{"line", "0009done\n", []pkt{{Data, "done\n"}}, nil},
		{"specials", "000000010002", []pkt{{Flush, ""}, {Delim, ""}, {ResponseEnd, ""}}, nil},
		{"empty data", "0004", []pkt{{Data, ""}}, nil},
		{"upper hex", "000Adone\n\n", []pkt{{Data, "done\n\n"}}, nil},
		{"0003", "0003", nil, ErrInvalidLength},
		{"not hex", "00g9done\n", nil, ErrInvalidLength},
		{"too long", "fff1", nil, ErrTooLong},
		{"short header", "00", nil, io.ErrUnexpectedEOF},
		{"short payload", "0009do", nil, io.ErrUnexpectedEOF},
		{"header only", "0009", nil, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll([]byte(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.err == nil && !equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func equal(a, b []pkt) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMaxPacket(t *testing.T) {
	big := strings.Repeat("x", MaxPayloadLen)
	b, err := AppendString(nil, big)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:4]) != "fff0" {
		t.Fatalf("header %q", b[:4])
	}
	got, err := readAll(b)
	if err != nil || len(got) != 1 || got[0].p != big {
		t.Fatalf("read back: %v", err)
	}
	if _, err := AppendString(nil, big+"x"); !errors.Is(err, ErrTooLong) {
		t.Fatalf("one byte over: err = %v", err)
	}
}

func TestWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, err := range []error{w.Line("command=fetch"), w.Delim(), w.Line("done\n"), w.Data(nil), w.Flush(), w.ResponseEnd()} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, want := buf.String(), "0012command=fetch\n00010009done\n000400000002"; got != want {
		t.Fatalf("wrote %q, want %q", got, want)
	}
	got, err := readAll(buf.Bytes())
	want := []pkt{{Data, "command=fetch\n"}, {Delim, ""}, {Data, "done\n"}, {Data, ""}, {Flush, ""}, {ResponseEnd, ""}}
	if err != nil || !equal(got, want) {
		t.Fatalf("got %v %v", got, err)
	}
}

func TestTrimLF(t *testing.T) {
	for in, want := range map[string]string{"a\n": "a", "a": "a", "": "", "a\n\n": "a\n"} {
		if got := string(TrimLF([]byte(in))); got != want {
			t.Errorf("TrimLF(%q) = %q", in, got)
		}
	}
}

// FuzzReader checks that any input either parses into packets that
// re-encode to the same length and read back the same, or fails with one
// of the documented errors after a well-formed prefix.
func FuzzReader(f *testing.F) {
	for _, s := range []string{"", "0000", "0009done\n0000", "000d0001packfile\n0002", "fff0", "0003", "00zz"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		pkts, err := readAll(in)
		var out []byte
		for _, p := range pkts {
			switch p.t {
			case Data:
				var e error
				if out, e = AppendString(out, p.p); e != nil {
					t.Fatalf("re-encode: %v", e)
				}
			case Flush:
				out = append(out, FlushPkt...)
			case Delim:
				out = append(out, DelimPkt...)
			case ResponseEnd:
				out = append(out, ResponseEndPkt...)
			}
		}
		again, err2 := readAll(out)
		if err2 != nil || !equal(again, pkts) {
			t.Fatalf("re-encoded packets %q read back as %v, %v", out, again, err2)
		}
		if err == nil && len(out) != len(in) {
			t.Fatalf("re-encoded %d bytes from %d", len(out), len(in))
		}
		if err != nil && !errors.Is(err, ErrInvalidLength) && !errors.Is(err, ErrTooLong) && err != io.ErrUnexpectedEOF {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
