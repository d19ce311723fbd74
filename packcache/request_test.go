package packcache

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

const (
	oidA = "1111111111111111111111111111111111111111"
	oidB = "2222222222222222222222222222222222222222"
	caps = " multi_ack_detailed no-done side-band-64k thin-pack no-progress include-tag ofs-delta agent=git/2.39.5"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name    string
		proto   string
		body    []byte
		err     error  // ErrMalformed or nil
		bypass  string // substring of the bypass reason; "" = cacheable
		depth   int
		filter  string
		wants   int
		haveCnt int
	}{
		{name: "v0 clone", body: pkts("want "+oidA+caps, "want "+oidB, "", "done"), wants: 2},
		{name: "v0 depth round", body: pkts("want "+oidA+caps, "deepen 1", ""), bypass: "without done", depth: 1, wants: 1},
		{name: "v0 depth done", body: pkts("want "+oidA+caps, "deepen 1", "", "done"), depth: 1, wants: 1},
		{name: "v0 filter", body: pkts("want "+oidA+caps+" filter", "filter blob:limit=1k", "", "done"), filter: "blob:limit=1k", wants: 1},
		{name: "v0 haves", body: pkts("want "+oidA+caps, "", "have "+oidB, "done"), bypass: "have", wants: 1, haveCnt: 1},
		{name: "v0 no side-band", body: pkts("want "+oidA+" ofs-delta", "", "done"), bypass: "side-band", wants: 1},
		{name: "v0 unknown cap", body: pkts("want "+oidA+caps+" frobnicate", "", "done"), bypass: "frobnicate", wants: 1},
		{name: "v0 unknown line", body: pkts("want "+oidA+caps, "frob x", "", "done"), bypass: "frob", wants: 1},
		{name: "v0 unknown filter", body: pkts("want "+oidA+caps, "filter sparse:oid=abc", "", "done"), bypass: "sparse", filter: "sparse:oid=abc", wants: 1},
		{name: "v0 empty", body: pkts(""), bypass: "nothing wanted"},
		{name: "v0 no body", body: nil, bypass: "nothing wanted"},
		{name: "v1 clone", proto: "version=1", body: pkts("want "+oidA+caps, "", "done"), wants: 1},
		{name: "v2 fetch", proto: "version=2", body: pkts("command=fetch", "agent=git/2.39.5", "object-format=sha1", "|", "ofs-delta", "deepen 3", "want "+oidA, "done", ""), depth: 3, wants: 1},
		{name: "v2 no args", proto: "version=2", body: pkts("command=fetch", ""), bypass: "nothing wanted"},
		{name: "v2 ls-refs", proto: "version=2", body: pkts("command=ls-refs", "agent=git/2.39.5", "|", "peel", "ref-prefix HEAD", "")},
		{name: "v2 ls-refs no args", proto: "version=2", body: pkts("command=ls-refs", "")},
		{name: "v2 ls-refs empty prefix", proto: "version=2", body: pkts("command=ls-refs", "|", "ref-prefix ", "")},
		{name: "v2 ls-refs unknown arg", proto: "version=2", body: pkts("command=ls-refs", "|", "frob", ""), bypass: "ls-refs argument"},
		{name: "v2 ls-refs server-option", proto: "version=2", body: pkts("command=ls-refs", "server-option=x", "|", "peel", ""), bypass: "server-option"},
		{name: "v2 ls-refs too many prefixes", proto: "version=2", body: manyPrefixes(tooManyPrefixes), bypass: "ref-prefix arguments"},
		{name: "v2 ls-refs many prefixes", proto: "version=2", body: manyPrefixes(tooManyPrefixes - 1)},
		{name: "v2 object-info", proto: "version=2", body: pkts("command=object-info", "|", "size", ""), bypass: "command object-info"},
		{name: "v2 server-option", proto: "version=2", body: pkts("command=fetch", "server-option=x", "|", "want "+oidA, "done", ""), bypass: "server-option", wants: 1},
		{name: "v2 sideband-all", proto: "version=2", body: pkts("command=fetch", "|", "sideband-all", "want "+oidA, "done", ""), bypass: "sideband-all", wants: 1},
		{name: "v2 haves", proto: "version=2", body: pkts("command=fetch", "|", "want "+oidA, "have "+oidB, "done", ""), bypass: "have", wants: 1, haveCnt: 1},

		{name: "bad pkt-line", body: []byte("00zzwant"), err: ErrMalformed},
		{name: "truncated", body: []byte("0032want " + oidA[:10]), err: ErrMalformed},
		{name: "first not want", body: pkts("have "+oidA, "", "done"), err: ErrMalformed},
		{name: "bad oid", body: pkts("want xyz"+caps, "", "done"), err: ErrMalformed},
		{name: "upper-case oid", body: pkts("want "+strings.ToUpper("abcdef"+oidA[6:]), "", "done"), err: ErrMalformed},
		{name: "bad depth", body: pkts("want "+oidA+caps, "deepen -1", "", "done"), err: ErrMalformed},
		{name: "no flush", body: pkts("want " + oidA + caps), err: ErrMalformed},
		{name: "data after done", body: pkts("want "+oidA+caps, "", "done", "done"), err: ErrMalformed},
		{name: "delim in v0", body: pkts("want "+oidA+caps, "|", "", "done"), err: ErrMalformed},
		{name: "v2 no command", proto: "version=2", body: pkts("want "+oidA, ""), err: ErrMalformed},
		{name: "v2 no flush", proto: "version=2", body: pkts("command=fetch", "|", "want "+oidA), err: ErrMalformed},
		{name: "v2 trailing", proto: "version=2", body: pkts("command=fetch", "|", "done", "", "x"), err: ErrMalformed},
		{name: "v2 empty", proto: "version=2", body: nil, err: ErrMalformed},
		{name: "v2 bad shallow", proto: "version=2", body: pkts("command=fetch", "|", "shallow 12", ""), err: ErrMalformed},
		{name: "too long packet", body: []byte("fff1"), err: ErrMalformed},
		{name: "v2 ls-refs peel value", proto: "version=2", body: pkts("command=ls-refs", "|", "peel 1", ""), err: ErrMalformed},
		{name: "v2 ls-refs unborn value", proto: "version=2", body: pkts("command=ls-refs", "|", "unborn x", ""), err: ErrMalformed},
		{name: "v2 ls-refs bare ref-prefix", proto: "version=2", body: pkts("command=ls-refs", "|", "ref-prefix", ""), err: ErrMalformed},
		{name: "v2 ls-refs empty arg", proto: "version=2", body: append(pkts("command=ls-refs", "|"), "00040000"...), err: ErrMalformed},
		{name: "v2 ls-refs delim", proto: "version=2", body: pkts("command=ls-refs", "|", "peel", "|", ""), err: ErrMalformed},
		{name: "v2 ls-refs no flush", proto: "version=2", body: pkts("command=ls-refs", "|", "peel"), err: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := DecodeRequest(ParseProtocol(tc.proto), tc.body)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			bypass := r.Bypass()
			switch {
			case tc.bypass == "" && bypass != nil:
				t.Fatalf("bypass: %v", bypass)
			case tc.bypass != "" && (!errors.Is(bypass, ErrBypass) || !strings.Contains(bypass.Error(), tc.bypass)):
				t.Fatalf("bypass = %v, want %q", bypass, tc.bypass)
			}
			if r.Depth != tc.depth || r.Filter != tc.filter || len(r.Wants) != tc.wants || r.Haves != tc.haveCnt {
				t.Fatalf("decoded %+v", r)
			}
		})
	}
}

// manyPrefixes is an ls-refs request with n distinct ref-prefix lines.
func manyPrefixes(n int) []byte {
	lines := []string{"command=ls-refs", "|"}
	for i := range n {
		lines = append(lines, "ref-prefix refs/heads/"+strconv.Itoa(i))
	}
	return pkts(append(lines, "")...)
}

func TestParseProtocol(t *testing.T) {
	for in, want := range map[string]int{"": 0, "version=1": 1, "version=2": 2, "version=2:object-format=sha256": 2,
		"version=1:version=2": 2, "version=3": 0, "junk": 0} {
		if got := ParseProtocol(in); got != want {
			t.Errorf("ParseProtocol(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestNormalizeFilter(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "blob:none": "blob:none", "blob:limit=1k": "blob:limit=1024", "blob:limit=2M": "blob:limit=2097152",
		"blob:limit=0": "blob:limit=0", "tree:0": "tree:0", "tree:007": "tree:7", "object:type=blob": "object:type=blob",
		"combine:tree:2+blob:none": "combine:blob:none+tree:2", "combine:blob%3Anone+tree%3A1": "combine:blob:none+tree:1",
		"sparse:oid=abc": "!", "blob:limit=x": "!", "tree:-1": "!", "combine:": "!", "combine:blob:none+%zz": "!", "frob": "!",
		"blob:limit=99999999999999999999g": "!",
	} {
		got, err := normalizeFilter(in)
		if want == "!" {
			if !errors.Is(err, ErrBypass) {
				t.Errorf("normalizeFilter(%q) = %q, %v; want a bypass", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("normalizeFilter(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestCapturedRequests decodes every request captured from real git (the
// fuzz seed corpus) and compares what the cache makes of each with
// testdata/captured.golden. Run with -update to rewrite it.
func TestCapturedRequests(t *testing.T) {
	names, err := filepath.Glob(filepath.Join(corpusDir, "v*"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no captured requests in %s: %v", corpusDir, err)
	}
	var out strings.Builder
	for _, n := range names {
		proto, body := readSeed(t, n)
		fmt.Fprintf(&out, "%s: %s\n", filepath.Base(n), describe(proto, body))
	}
	golden := filepath.Join("testdata", "captured.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Fatalf("decoded captured requests differ from %s (run with -update):\n%s", golden, out.String())
	}
}

// describe says what the cache does with a request.
func describe(proto string, body []byte) string {
	r, err := DecodeRequest(ParseProtocol(proto), body)
	if err != nil {
		return "error: " + err.Error()
	}
	if err := r.Bypass(); err != nil {
		return strings.TrimPrefix(err.Error(), "packcache: request ")
	}
	k, err := KeyOf("r", 0, r)
	if err != nil {
		return "key error: " + err.Error()
	}
	if k.Command != "" {
		return fmt.Sprintf("cacheable v%d %s symrefs=%t peel=%t unborn=%t prefixes=%q features=%v",
			k.Version, k.Command, k.Symrefs, k.Peel, k.Unborn, k.RefPrefixes, k.Features)
	}
	return fmt.Sprintf("cacheable v%d wants=%d shallows=%d depth=%d since=%d not=%v relative=%t filter=%q features=%v",
		k.Version, len(k.Wants), len(k.Shallows), k.Depth, k.DeepenSince, k.DeepenNot, k.DeepenRelative, k.Filter, k.Features)
}

// readSeed parses a corpus file written by writeSeed.
func readSeed(t *testing.T, name string) (string, []byte) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%s: %d lines", name, len(lines))
	}
	proto, err1 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
	body, err2 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "[]byte("), ")"))
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: %v %v", name, err1, err2)
	}
	return proto, []byte(body)
}
