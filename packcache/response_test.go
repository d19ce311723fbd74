package packcache

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
)

// gitResponse runs git upload-pack on a request and returns its output.
func gitResponse(t *testing.T, path string, version int, body []byte) []byte {
	t.Helper()
	cmd := exec.Command("git", "upload-pack", "--stateless-rpc", path)
	if version == 2 {
		cmd.Env = append(os.Environ(), "GIT_PROTOCOL=version=2")
	}
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("upload-pack: %v", err)
	}
	return out
}

// TestCheckerOnGitOutput feeds real responses to the checker in random
// pieces: complete ones pass, every truncation and any trailing byte fail.
func TestCheckerOnGitOutput(t *testing.T) {
	r := newRepo(t, 6)
	head := run(t, r.bare, "rev-parse", "main")
	v2 := func(args ...string) []byte {
		return pkts(append(append([]string{"command=fetch", "object-format=sha1", "|", "ofs-delta"}, args...), "want "+head, "done", "")...)
	}
	cases := []struct {
		name    string
		version int
		body    []byte
	}{
		{"v0", 0, v0Clone(v0caps, head)},
		{"v0 progress side-band", 0, v0Clone(" side-band ofs-delta", head)},
		{"v0 depth", 0, pkts("want "+head+v0caps, "deepen 1", "", "done")},
		{"v2", 2, v2()},
		{"v2 depth", 2, v2("deepen 1")},
		{"ls-refs clone", 3, lsRefs("peel", "symrefs", "unborn", "ref-prefix HEAD", "ref-prefix refs/heads/", "ref-prefix refs/tags/")},
		{"ls-refs all", 3, lsRefs()},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := gitResponse(t, r.bare, min(tc.version, 2), tc.body)
			if err := feedPieces(rng, tc.version, out); err != nil {
				t.Fatalf("complete response: %v", err)
			}
			for range 50 {
				cut := rng.IntN(len(out))
				if err := feedPieces(rng, tc.version, out[:cut]); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("cut at %d of %d: %v", cut, len(out), err)
				}
			}
			if err := feedPieces(rng, tc.version, append(out, '0')); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("trailing byte: %v", err)
			}
		})
	}
}

func feedPieces(rng *rand.Rand, version int, out []byte) error {
	chk := newChecker(version)
	for len(out) > 0 {
		n := min(len(out), 1+rng.IntN(300))
		chk.feed(out[:n])
		out = out[n:]
	}
	return chk.result()
}

func TestCheckerErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		out     []byte
	}{
		{"ERR", 0, pkts("ERR upload-pack: not our ref")},
		{"ERR v2", 2, pkts("ERR nope")},
		{"band 3", 0, append(pkts("NAK"), append([]byte("000a\x03fatal"), "0000"...)...)},
		{"bad band", 0, append(pkts("NAK"), append([]byte("0006\x07x"), "0000"...)...)},
		{"no packfile", 2, pkts("shallow-info", "|", "")},
		{"delim in v0", 0, pkts("NAK", "|")},
		{"response-end", 2, []byte("0002")},
		{"bad header", 0, []byte("zzzz")},
		{"empty", 0, nil},
		{"ls-refs empty", 3, nil},
		{"ls-refs ERR", 3, pkts("ERR nope", "")},
		{"ls-refs ERR after a ref", 3, pkts(oidA+" refs/heads/main", "ERR nope", "")},
		{"ls-refs no flush", 3, pkts(oidA + " refs/heads/main")},
		{"ls-refs delim", 3, pkts(oidA+" refs/heads/main", "|", "")},
		{"ls-refs response-end", 3, []byte("0002")},
		{"ls-refs short line", 3, pkts("abc", "")},
		{"ls-refs empty line", 3, []byte("00040000")},
		{"ls-refs not a ref", 3, pkts("this is no ref line at all", "")},
		{"ls-refs packfile", 3, pkts("packfile", "")},
		{"ls-refs after flush", 3, append(pkts(oidA+" HEAD", ""), pkts(oidA+" HEAD")...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := completeResponse(tc.version, tc.out); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// FuzzChecker: the checker never panics, and its verdict does not depend
// on how the response is split into writes.
func FuzzChecker(f *testing.F) {
	nak := pkts("NAK")
	f.Add(uint8(0), append(append(nak, "0009\x01PACK"...), "0000"...), uint16(3))
	f.Add(uint8(2), append(pkts("shallow-info", "shallow "+oidA, "|", "packfile"), "0006\x02x0000"...), uint16(20))
	f.Add(uint8(0), pkts("ERR nope"), uint16(1))
	f.Add(uint8(3), pkts(oidA+" HEAD symref-target:refs/heads/main", oidB+" refs/tags/v1 peeled:"+oidA, ""), uint16(50))
	f.Fuzz(func(t *testing.T, version uint8, out []byte, split uint16) {
		v := int(version % 4) // 3: a v2 ls-refs response
		whole := completeResponse(v, out)
		chk := newChecker(v)
		at := int(split) % (len(out) + 1)
		chk.feed(out[:at])
		chk.feed(out[at:])
		split2 := chk.result()
		if (whole == nil) != (split2 == nil) || (whole != nil && whole.Error() != split2.Error()) {
			t.Fatalf("whole: %v; split at %d: %v", whole, at, split2)
		}
		if whole != nil && !errors.Is(whole, ErrIncomplete) {
			t.Fatalf("error %v does not wrap ErrIncomplete", whole)
		}
	})
}
