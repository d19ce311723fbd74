package packcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lsRefs builds a v2 ls-refs request body with the given arguments.
func lsRefs(args ...string) []byte {
	return pkts(append(append([]string{"command=ls-refs", "agent=git/2.39.5", "object-format=sha1", "|"}, args...), "")...)
}

// TestLsRefsCloneHit: the second v2 clone gets its ref listing from the
// cache as well as its pack, so it starts no git process at all.
func TestLsRefsCloneHit(t *testing.T) {
	r := newRepo(t, 4)
	repos := map[string]string{"r": r.bare}
	direct := newServer(t, nil, repos, true)
	c := newCache(t, Config{LsRefs: true})
	s := newServer(t, c, repos, false)
	opts := []string{"-c", "protocol.version=2"}
	refs := run(t, clone(t, direct.url("r"), opts...), "for-each-ref")
	clone(t, s.url("r"), opts...)
	st := c.Stats()
	if st.LsRefsMisses != 1 || st.Misses != 2 || st.GitStarted != 2 || st.Published != 2 || st.Bypasses != 0 {
		t.Fatalf("first clone: stats %+v, want a miss each for ls-refs and fetch", st)
	}
	dir := clone(t, s.url("r"), opts...)
	if got := run(t, dir, "for-each-ref"); got != refs {
		t.Fatalf("refs from the cache\n%s\nwant\n%s", got, refs)
	}
	if got := run(t, dir, "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Fatalf("HEAD of the clone from the cache: %s", got)
	}
	st2 := c.Stats()
	if st2.GitStarted != st.GitStarted || st2.LsRefsHits != 1 || st2.Hits != 2 || st2.Misses != 2 {
		t.Fatalf("second clone: stats %+v, want two hits and no git", st2)
	}
	if st2.BytesFromCache == 0 || s.errs != nil {
		t.Fatalf("stats %+v, serve errors %v", st2, s.errs)
	}
}

// TestLsRefsOffByDefault: without Config.LsRefs a v2 clone's ls-refs goes
// straight to git every time; only its pack is cached.
func TestLsRefsOffByDefault(t *testing.T) {
	r := newRepo(t, 2)
	repos := map[string]string{"r": r.bare}
	c := newCache(t, Config{})
	s := newServer(t, c, repos, false)
	opts := []string{"-c", "protocol.version=2"}
	clone(t, s.url("r"), opts...)
	clone(t, s.url("r"), opts...)
	st := c.Stats()
	if st.LsRefsHits+st.LsRefsMisses != 0 || st.Bypasses != 2 || st.Hits != 1 || st.Misses != 1 {
		t.Fatalf("stats %+v, want two ls-refs bypasses, a pack miss and a pack hit", st)
	}
}

// TestLsRefsAfterPush: a push and Invalidate give ls-refs a new key, so
// the listing and the clone show the pushed commit.
func TestLsRefsAfterPush(t *testing.T) {
	r := newRepo(t, 4)
	repos := map[string]string{"r": r.bare}
	c := newCache(t, Config{LsRefs: true})
	s := newServer(t, c, repos, false)
	direct := newServer(t, nil, repos, true)
	v2 := []string{"-c", "protocol.version=2"}
	lsRemote := func(srv *server) string {
		return run(t, "", append(v2, "ls-remote", srv.url("r"))...)
	}
	before := lsRemote(s)
	if again := lsRemote(s); again != before {
		t.Fatalf("ls-remote from the cache\n%s\nwant\n%s", again, before)
	}
	if st := c.Stats(); st.LsRefsMisses != 1 || st.LsRefsHits != 1 {
		t.Fatalf("stats %+v", st)
	}
	head := r.push(t, "new")
	if err := c.Invalidate(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	after := lsRemote(s)
	if after != lsRemote(direct) || !strings.Contains(after, head+"\trefs/heads/main") {
		t.Fatalf("ls-remote after the push\n%s\nwant main at %s", after, head)
	}
	if got := run(t, clone(t, s.url("r"), v2...), "rev-parse", "main"); got != head {
		t.Fatalf("clone after the push has main at %s, want %s", got, head)
	}
	if st := c.Stats(); st.LsRefsMisses != 3 || st.LsRefsHits != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v, want the listing produced again after the push", st)
	}
}

// TestLsRefsKeys: each argument that changes the listing makes its own
// entry; agent, session-id, the order and repetition of the prefixes do
// not. Every listing equals git's own.
func TestLsRefsKeys(t *testing.T) {
	r := newRepo(t, 4)
	c := newCache(t, Config{LsRefs: true})
	const v2 = "version=2"
	distinct := []struct {
		name string
		body []byte
	}{
		{"plain", lsRefs()},
		{"symrefs", lsRefs("symrefs")},
		{"peel", lsRefs("peel")},
		{"unborn", lsRefs("unborn")},
		{"clone", lsRefs("peel", "symrefs", "unborn", "ref-prefix HEAD", "ref-prefix refs/heads/", "ref-prefix refs/tags/")},
		{"heads", lsRefs("peel", "symrefs", "ref-prefix refs/heads/")},
		{"tags", lsRefs("peel", "symrefs", "ref-prefix refs/tags/")},
		{"empty prefix", lsRefs("ref-prefix ")},
		{"no match", lsRefs("ref-prefix refs/nothing/")},
	}
	same := []struct {
		name string
		body []byte
	}{
		{"prefix order", lsRefs("ref-prefix refs/tags/", "unborn", "ref-prefix refs/heads/", "symrefs", "ref-prefix HEAD", "peel")},
		{"duplicates", lsRefs("peel", "peel", "symrefs", "unborn", "ref-prefix HEAD", "ref-prefix refs/tags/", "ref-prefix refs/heads/", "ref-prefix refs/tags/")},
		{"agent, session-id", pkts("command=ls-refs", "agent=other/1.0", "session-id=abc", "|", "peel", "symrefs", "unborn",
			"ref-prefix HEAD", "ref-prefix refs/heads/", "ref-prefix refs/tags/", "")},
		{"default object format", pkts("command=ls-refs", "|", "peel", "symrefs", "unborn",
			"ref-prefix HEAD", "ref-prefix refs/heads/", "ref-prefix refs/tags/", "")},
	}
	outs := map[string]string{}
	for _, d := range distinct {
		out, res, err := serve(t, c, "r", r.bare, v2, d.body)
		if res != Miss || err != nil {
			t.Fatalf("%s: %v %v, want a miss", d.name, res, err)
		}
		if want := gitResponse(t, r.bare, 2, d.body); string(out) != string(want) {
			t.Fatalf("%s: %q, want git's %q", d.name, out, want)
		}
		outs[d.name] = string(out)
	}
	if outs["heads"] == outs["tags"] || outs["no match"] != "0000" || !strings.Contains(outs["clone"], "symref-target:refs/heads/main") {
		t.Fatalf("listings: %q", outs)
	}
	for _, s := range same {
		out, res, err := serve(t, c, "r", r.bare, v2, s.body)
		if res != Hit || err != nil || string(out) != outs["clone"] {
			t.Fatalf("%s: %v %v %q, want a hit on the clone's listing", s.name, res, err, out)
		}
	}
	// No capability section: sha1 by default, the plain listing.
	if out, res, err := serve(t, c, "r", r.bare, v2, pkts("command=ls-refs", "")); res != Hit || err != nil || string(out) != outs["plain"] {
		t.Fatalf("no capabilities: %v %v %q, want a hit on the plain listing", res, err, out)
	}
	// The same listing for another repository, or a sha256 client, is
	// another entry.
	if _, res, err := serve(t, c, "other", r.bare, v2, lsRefs()); res != Miss || err != nil {
		t.Fatalf("other repository: %v %v", res, err)
	}
	sha256 := pkts("command=ls-refs", "object-format=sha256", "|", "peel", "")
	if _, res, _ := serve(t, c, "r", r.bare, v2, sha256); res != Miss {
		t.Fatalf("object-format=sha256: %v, want a miss", res)
	}
	st := c.Stats()
	if st.LsRefsMisses != uint64(len(distinct))+2 || st.LsRefsHits != uint64(len(same))+1 || st.Hits != st.LsRefsHits {
		t.Fatalf("stats %+v", st)
	}
}

// TestLsRefsMalformed: ls-refs arguments in a wrong shape are rejected
// with an error naming them, before git runs; unknown ones go to git.
func TestLsRefsMalformed(t *testing.T) {
	r := newRepo(t, 2)
	c := newCache(t, Config{LsRefs: true})
	for _, tc := range []struct {
		name, want string
		body       []byte
	}{
		{"flag with a value", `"peel x"`, lsRefs("peel x")},
		{"symrefs with a value", `"symrefs yes"`, lsRefs("symrefs yes")},
		{"ref-prefix alone", `"ref-prefix"`, lsRefs("ref-prefix")},
		{"empty line", "empty ls-refs argument", append(pkts("command=ls-refs", "|"), "00040000"...)},
		{"delim in the arguments", "delim", lsRefs("peel", "|", "symrefs")},
		{"no final flush", "before its flush", pkts("command=ls-refs", "|", "peel")},
		{"data after the flush", "after the final flush", append(lsRefs("peel"), pkts("peel")...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, res, err := serve(t, c, "r", r.bare, "version=2", tc.body)
			if res != Rejected || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) || len(out) != 0 {
				t.Fatalf("%v %v %q; want Rejected with %s", res, err, out, tc.want)
			}
		})
	}
	if st := c.Stats(); st.GitStarted != 0 || countFiles(t, c.cfg.Dir) != 0 {
		t.Fatalf("stats %+v", st)
	}
	// An argument git does not know goes to git, whose refusal comes
	// back as the client's fault (ErrMalformed, with git's message).
	_, res, err := serve(t, c, "r", r.bare, "version=2", lsRefs("frobnicate"))
	if res != Bypass || !errors.Is(err, ErrMalformed) || errors.Is(err, ErrGit) || !strings.Contains(err.Error(), "unexpected line: 'frobnicate'") {
		t.Fatalf("unknown argument: %v %v, want git's own refusal as ErrMalformed", res, err)
	}
	// So does a server-option.
	opt := pkts("command=ls-refs", "server-option=x", "|", "peel", "")
	if _, res, _ := serve(t, c, "r", r.bare, "version=2", opt); res != Bypass {
		t.Fatalf("server-option: %v, want a bypass", res)
	}
}

func pkt(line string) string { return fmt.Sprintf("%04x%s", len(line)+4, line) }

// fakeGit writes a script that reads its input and prints out, then
// exits with code; it returns its path.
func fakeGit(t *testing.T, out string, code int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "git")
	script := fmt.Sprintf("#!/bin/sh\ncat >/dev/null\nprintf '%%s' '%s'\nexit %d\n", out, code)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLsRefsNotPublished: an ERR line, a listing cut off before its flush,
// something other than ref lines, a non-zero exit: the reader gets an
// error and nothing is published; a good listing is.
func TestLsRefsNotPublished(t *testing.T) {
	ref := pkt(oidA + " refs/heads/main\n")
	for _, tc := range []struct {
		name, out string
		code      int
		want      error
	}{
		{"ERR", "000dERR nope\n0000", 0, ErrIncomplete},
		{"ERR after a ref", ref + "000dERR nope\n0000", 0, ErrIncomplete},
		{"no flush", ref, 0, ErrIncomplete},
		{"cut in a line", ref[:30], 0, ErrIncomplete},
		{"not a ref line", "000ehello world0000", 0, ErrIncomplete},
		{"delim", ref + "00010000", 0, ErrIncomplete},
		{"after the flush", ref + "0000" + ref, 0, ErrIncomplete},
		{"exit 128", ref + "0000", 128, ErrGit},
		{"good", ref + "0000", 0, nil},
		{"no refs", "0000", 0, nil},
		{"unborn", pkt("unborn HEAD symref-target:refs/x\n") + "0000", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, Config{LsRefs: true, GitPath: fakeGit(t, tc.out, tc.code)})
			out, res, err := serve(t, c, "r", t.TempDir(), "version=2", lsRefs("peel"))
			if res != Miss || !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("%v %v, want a miss with %v", res, err, tc.want)
			}
			if string(out) != tc.out {
				t.Fatalf("reader got %q, want what git wrote, %q", out, tc.out)
			}
			st := c.Stats()
			if tc.want != nil {
				waitFor(t, "the file removed", func() bool { return countFiles(t, c.cfg.Dir) == 0 })
				if st.Published != 0 || st.Failed != 1 {
					t.Fatalf("stats %+v", st)
				}
				if _, res, _ := serve(t, c, "r", t.TempDir(), "version=2", lsRefs("peel")); res != Miss {
					t.Fatalf("next request: %v, want git again", res)
				}
				return
			}
			if st.Published != 1 {
				t.Fatalf("stats %+v", st)
			}
			if again, res, err := serve(t, c, "r", t.TempDir(), "version=2", lsRefs("peel")); res != Hit || err != nil || string(again) != tc.out {
				t.Fatalf("next request: %v %v %q, want a hit", res, err, again)
			}
		})
	}
}

// lengthWriter records SetContentLength calls.
type lengthWriter struct {
	bytes.Buffer
	length int64
	calls  int
}

func (l *lengthWriter) SetContentLength(n int64) { l.length, l.calls = n, l.calls+1 }

// TestContentLengthOnHit: ServeUploadPack announces the length of a hit
// (an ls-refs listing or a pack) to a ContentLengthSetter, and of nothing
// else.
func TestContentLengthOnHit(t *testing.T) {
	r := newRepo(t, 2)
	c := newCache(t, Config{LsRefs: true})
	head := run(t, r.bare, "rev-parse", "main")
	for _, tc := range []struct {
		name, proto string
		body        []byte
	}{
		{"ls-refs", "version=2", lsRefs("peel", "symrefs")},
		{"pack", "", v0Clone(v0caps, head)},
	} {
		for _, want := range []Result{Miss, Hit} {
			var w lengthWriter
			res, err := c.ServeUploadPack(context.Background(), &w, "r", r.bare, tc.proto, bytes.NewReader(tc.body))
			if res != want || err != nil {
				t.Fatalf("%s: %v %v, want %v", tc.name, res, err, want)
			}
			if wantCalls := map[Result]int{Miss: 0, Hit: 1}[want]; w.calls != wantCalls ||
				(want == Hit && w.length != int64(w.Len())) {
				t.Fatalf("%s %v: %d calls, length %d for %d bytes", tc.name, want, w.calls, w.length, w.Len())
			}
		}
	}
}
