package packcache

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corpusDir holds the seed corpus of FuzzDecodeRequest: real requests
// captured from git by TestCaptureCorpus.
const corpusDir = "testdata/fuzz/FuzzDecodeRequest"

// TestCaptureCorpus regenerates the seed corpus from real git clients.
// It runs only with SHOAL_CAPTURE_CORPUS=1:
//
//	SHOAL_CAPTURE_CORPUS=1 go test -run TestCaptureCorpus ./packcache
//
// The test repository is deterministic (fixed dates and content), so the
// object ids in the captured requests are stable.
func TestCaptureCorpus(t *testing.T) {
	if os.Getenv("SHOAL_CAPTURE_CORPUS") == "" {
		t.Skip("set SHOAL_CAPTURE_CORPUS=1 to recapture the corpus")
	}
	r := newRepo(t, 6)
	s := newServer(t, nil, map[string]string{"r": r.bare}, true)
	if err := os.MkdirAll(corpusDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0", "1", "2"} {
		proto := []string{"-c", "protocol.version=" + v}
		capture := func(name string, gitArgs ...string) {
			t.Helper()
			before := len(s.posts)
			out, err := runErr("", append(proto, gitArgs...)...)
			if err != nil {
				t.Fatalf("%s: git %v: %v\n%s", name, gitArgs, err, out)
			}
			for i, p := range s.posts[before:] {
				writeSeed(t, fmt.Sprintf("v%s-%s-%d", v, name, i), p)
			}
		}
		tmp := t.TempDir()
		dir := func(n string) string { return filepath.Join(tmp, n) }
		capture("clone", "clone", "-q", "--bare", s.url("r"), dir("full"))
		capture("depth1", "clone", "-q", "--bare", "--depth", "1", s.url("r"), dir("d1"))
		capture("blobnone", "clone", "-q", "--bare", "--filter=blob:none", s.url("r"), dir("bn"))
		capture("treedepth", "clone", "-q", "--bare", "--filter=tree:0", s.url("r"), dir("td"))
		capture("since", "clone", "-q", "--bare", "--shallow-since=2025-12-31", s.url("r"), dir("ss"))
		capture("exclude", "clone", "-q", "--bare", "--shallow-exclude=side", s.url("r"), dir("se"))
		capture("singlebranch", "clone", "-q", "--bare", "--single-branch", "--branch", "side", s.url("r"), dir("sb"))
		capture("deepen", "-C", dir("d1"), "fetch", "-q", "--deepen", "1")
		capture("unshallow", "-C", dir("d1"), "fetch", "-q", "--unshallow")
		r.push(t, "for-v"+v)
		capture("fetch-haves", "-C", dir("full"), "fetch", "-q", "origin", "+refs/heads/*:refs/heads/*")
	}
}

// writeSeed writes one captured request in the fuzzing engine's corpus
// format: the Git-Protocol header, then the body.
func writeSeed(t *testing.T, name string, p post) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "go test fuzz v1\nstring(%q)\n[]byte(%q)\n", p.protocol, p.body)
	if err := os.WriteFile(filepath.Join(corpusDir, name), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
