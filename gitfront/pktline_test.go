package gitfront

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestPktReader(t *testing.T) {
	want := "0032want 0123456789012345678901234567890123456789\n"
	for _, tc := range []struct {
		name, body string
		mode       pktMode
		ok         bool
	}{
		{"flush only", "0000", pktAll, true},
		{"wants then flush and done", want + "0000" + "0009done\n", pktAll, true},
		{"negotiation round", want + "0000", pktAll, true},
		{"v2 command", "0014command=ls-refs\n0001" + "0009peel\n0000", pktAll, true},
		{"uppercase hex", "000Ahave\n\n0000", pktAll, true},
		{"empty", "", pktAll, false},
		{"not hex", "zzzz", pktAll, false},
		{"length 3", "0003", pktAll, false},
		{"too long", "fff0" + strings.Repeat("x", 65516), pktAll, false},
		{"cut in header", "00", pktAll, false},
		{"cut in payload", want[:20], pktAll, false},
		{"no final flush", want, pktAll, false},
		{"commands then pack", "0010old new ref\n0000PACK\x00\x00\xff garbage", pktCommands, true},
		{"commands without flush", "0010old new ref\n", pktCommands, false},
		{"bad commands", "zzzz0000", pktCommands, false},
	} {
		for _, half := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.body)
			if half {
				r = iotest.OneByteReader(r)
			}
			got, err := io.ReadAll(newPktReader(r, tc.mode))
			if tc.ok && (err != nil || string(got) != tc.body) {
				t.Errorf("%s (one byte %v): %v, %q", tc.name, half, err, got)
			}
			if !tc.ok && !errors.Is(err, ErrMalformed) {
				t.Errorf("%s (one byte %v): %v, want ErrMalformed", tc.name, half, err)
			}
		}
	}
}

func FuzzPktReader(f *testing.F) {
	f.Add([]byte("0032want 0123456789012345678901234567890123456789\n00000009done\n"), false)
	f.Add([]byte("0010old new ref\n0000PACK"), true)
	f.Fuzz(func(t *testing.T, b []byte, commands bool) {
		mode := pktAll
		if commands {
			mode = pktCommands
		}
		got, err := io.ReadAll(newPktReader(strings.NewReader(string(b)), mode))
		if err == nil && string(got) != string(b) {
			t.Fatalf("passed %q as %q", b, got)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
	})
}
