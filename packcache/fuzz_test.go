package packcache

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// FuzzDecodeRequest feeds arbitrary requests to the decoder. It must never
// panic; errors must wrap ErrMalformed, bypass reasons ErrBypass; and a
// cacheable request, re-encoded, must decode to the same key. The seed
// corpus in testdata/fuzz/FuzzDecodeRequest was captured from real git
// (TestCaptureCorpus).
func FuzzDecodeRequest(f *testing.F) {
	f.Add("version=2", pkts("command=fetch", "agent=x", "|", "want "+oidA, "done", ""))
	f.Add("", pkts("want "+oidA+caps, "deepen 1", "filter combine:blob:none+tree:1", "", "done"))
	f.Add("version=2", pkts("command=ls-refs", "object-format=sha1", "|", "peel", "ref-prefix refs/tags/", "ref-prefix ", ""))
	f.Fuzz(func(t *testing.T, proto string, body []byte) {
		r, err := DecodeRequest(ParseProtocol(proto), body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if err := r.Bypass(); err != nil {
			if !errors.Is(err, ErrBypass) {
				t.Fatalf("bypass %v does not wrap ErrBypass", err)
			}
			return
		}
		k, err := KeyOf("r", 1, r)
		if err != nil {
			t.Fatalf("KeyOf of a cacheable request: %v", err)
		}
		again, err := DecodeRequest(r.Version, encodeRequest(r))
		if err != nil {
			t.Fatalf("re-encoded request: %v", err)
		}
		k2, err := KeyOf("r", 1, again)
		if err != nil || k2.ID() != k.ID() {
			t.Fatalf("re-encoded key\n%s\nwant\n%s (%v)", k2, k, err)
		}
	})
}

// encodeRequest writes a cacheable request back in its protocol's form.
func encodeRequest(r *Request) []byte {
	if r.Command == "ls-refs" {
		return encodeLsRefs(r)
	}
	var args []string
	for _, s := range r.Shallows {
		args = append(args, "shallow "+s)
	}
	if r.Depth > 0 {
		args = append(args, fmt.Sprintf("deepen %d", r.Depth))
	}
	if r.DeepenSince != 0 {
		args = append(args, fmt.Sprintf("deepen-since %d", r.DeepenSince))
	}
	for _, s := range r.DeepenNot {
		args = append(args, "deepen-not "+s)
	}
	if r.Filter != "" {
		args = append(args, "filter "+r.Filter)
	}
	for _, s := range r.WantRefs {
		args = append(args, "want-ref "+s)
	}
	if r.Version == 2 {
		return encodeV2(r, args)
	}
	first := "want " + r.Wants[0] + " " + strings.Join(r.Features, " ")
	if r.DeepenRelative {
		first += " deepen-relative"
	}
	lines := []string{first}
	for _, w := range r.Wants[1:] {
		lines = append(lines, "want "+w)
	}
	return pkts(append(append(lines, args...), "", "done")...)
}

func encodeV2(r *Request, args []string) []byte {
	lines := []string{"command=fetch", "agent=fuzz"}
	var flags []string
	for _, f := range r.Features {
		if strings.HasPrefix(f, "object-format=") {
			lines = append(lines, f)
		} else {
			flags = append(flags, f)
		}
	}
	lines = append(append(append(lines, "|"), flags...), args...)
	if r.DeepenRelative {
		lines = append(lines, "deepen-relative")
	}
	for _, w := range r.Wants {
		lines = append(lines, "want "+w)
	}
	return pkts(append(lines, "done", "")...)
}

func encodeLsRefs(r *Request) []byte {
	lines := []string{"command=ls-refs", "agent=fuzz"}
	lines = append(append(lines, r.Features...), "|")
	for _, f := range []struct {
		on   bool
		name string
	}{{r.Symrefs, "symrefs"}, {r.Peel, "peel"}, {r.Unborn, "unborn"}} {
		if f.on {
			lines = append(lines, f.name)
		}
	}
	for _, p := range r.RefPrefixes {
		lines = append(lines, "ref-prefix "+p)
	}
	return pkts(append(lines, "")...)
}
