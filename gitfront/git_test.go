package gitfront

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func webHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		fmt.Fprintf(w, "web %s user=%q\n", r.URL.Path, p.Name)
	})
}

// TestGitCloneAndPush pushes, clones every way, pushes again and sees
// the new commit in a new clone; each clone passes git fsck.
func TestGitCloneAndPush(t *testing.T) {
	w := newGitWorld(t, nil)
	alice := w.url("alice", "alice-pw-S3cret", "priv")
	src := w.workTree(map[string]string{"README": "hello\n", "big.txt": strings.Repeat("shoal ", 50000)})
	first := w.mustGit(src, "rev-parse", "HEAD")
	w.mustGit(src, "push", "-q", alice, "main")
	if got := w.serverRef("priv", "refs/heads/main"); got != first {
		t.Fatalf("server main = %q after push, want %s", got, first)
	}
	for _, args := range [][]string{
		{"clone", "-q"},
		{"-c", "protocol.version=0", "clone", "-q"},
		{"-c", "protocol.version=1", "clone", "-q"},
		{"-c", "protocol.version=2", "clone", "-q"},
		{"-c", "protocol.version=2", "clone", "-q", "--depth", "1"},
		{"-c", "protocol.version=0", "clone", "-q", "--depth", "1"},
		{"-c", "protocol.version=2", "clone", "-q", "--filter=blob:none"},
		{"-c", "protocol.version=0", "clone", "-q", "--bare"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "c")
			w.mustGit("", append(args, alice, dst)...)
			if got := w.mustGit(dst, "rev-parse", "HEAD"); got != first {
				t.Fatalf("cloned HEAD %s, want %s", got, first)
			}
			w.mustGit(dst, "fsck", "--no-progress")
		})
	}
	second := w.commit(src, map[string]string{"README": "hello again\n"})
	w.mustGit(src, "push", "-q", alice, "main")
	dst := filepath.Join(t.TempDir(), "again")
	w.mustGit("", "clone", "-q", alice, dst)
	if got := w.mustGit(dst, "rev-parse", "HEAD"); got != second {
		t.Fatalf("clone after the second push: HEAD %s, want %s", got, second)
	}
	if n := w.pushes.Load(); n < 2 {
		t.Errorf("OnPush called %d times, want at least 2", n)
	}
	w.saw("v2")
	w.assertNoGitRunning()
}

// TestGitFetchAfterPush fetches into an existing clone (negotiation with
// haves) and pulls a push of many branches, whose want list is long
// enough that git gzips the request.
func TestGitFetchAfterPush(t *testing.T) {
	w := newGitWorld(t, nil)
	alice := w.url("alice", "alice-pw-S3cret", "pub")
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "push", "-q", alice, "main")
	dst := filepath.Join(t.TempDir(), "c")
	w.mustGit("", "clone", "-q", w.url("", "", "pub"), dst)
	for i := range 40 {
		w.mustGit(src, "branch", fmt.Sprintf("feature/branch-with-a-long-name-%02d", i))
		w.commit(src, map[string]string{"a": fmt.Sprintf("%d\n", i)})
	}
	w.mustGit(src, "push", "-q", alice, "--all")
	for _, v := range []string{"0", "2"} {
		w.mustGit(dst, "-c", "protocol.version="+v, "fetch", "-q", "origin")
		want := w.mustGit(src, "rev-parse", "main")
		if got := w.mustGit(dst, "rev-parse", "origin/main"); got != want {
			t.Fatalf("v%s fetch: origin/main %s, want %s", v, got, want)
		}
	}
	out := w.mustGit(dst, "branch", "-r")
	if n := strings.Count(out, "origin/feature/"); n != 40 {
		t.Fatalf("fetched %d feature branches, want 40", n)
	}
	w.mustGit(dst, "fsck", "--no-progress")
	w.saw("gzip")
}

// TestGitLargePush pushes a pack larger than git's http.postBuffer, which
// git sends chunked after a probe request.
func TestGitLargePush(t *testing.T) {
	w := newGitWorld(t, nil)
	noise := make([]byte, 3<<20)
	if _, err := io.ReadFull(rand.Reader, noise); err != nil {
		t.Fatal(err)
	}
	src := w.workTree(map[string]string{"noise.bin": string(noise)})
	w.mustGit(src, "push", "-q", w.url("alice", "alice-pw-S3cret", "priv"), "main")
	dst := filepath.Join(t.TempDir(), "c")
	w.mustGit("", "clone", "-q", w.url("bob", "bob-pw-S3cret", "priv"), dst)
	got, err := os.ReadFile(filepath.Join(dst, "noise.bin"))
	if err != nil || string(got) != string(noise) {
		t.Fatalf("cloned noise.bin differs (err %v, %d bytes)", err, len(got))
	}
	w.saw("chunked")
}

// countingPacker is an UploadPacker that runs git itself and counts its
// calls, standing in for the pack cache at the seam.
type countingPacker struct {
	calls atomic.Int64
	g     *GitHandler
}

func (c *countingPacker) ServeUploadPack(ctx context.Context, w io.Writer, name, dir, protocol string, body io.Reader) error {
	c.calls.Add(1)
	env := gitEnv([]string{"GIT_PROTOCOL=" + protocol})
	return c.g.run(ctx, w, func(stdin io.WriteCloser) {
		defer stdin.Close()
		_, _ = io.Copy(stdin, body)
	}, env, append(append([]string{}, uploadPackConfig...), "upload-pack", "--stateless-rpc", dir)...)
}

// TestGitUploadPacker sends every upload-pack POST through the
// UploadPacker.
func TestGitUploadPacker(t *testing.T) {
	packer := &countingPacker{}
	w := newGitWorld(t, func(c *Config) { c.Git.UploadPacker = packer })
	packer.g = w.front.Git()
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "push", "-q", w.url("alice", "alice-pw-S3cret", "pub"), "main")
	for _, v := range []string{"0", "2"} {
		before := packer.calls.Load()
		dst := filepath.Join(t.TempDir(), "c"+v)
		w.mustGit("", "-c", "protocol.version="+v, "clone", "-q", w.url("", "", "pub"), dst)
		if packer.calls.Load() == before {
			t.Fatalf("v%s clone did not go through the UploadPacker", v)
		}
	}
}

// assertNoGitRunning checks that no git process of the server is left.
func (w *gitWorld) assertNoGitRunning() {
	w.t.Helper()
	if n := w.front.Git().Stats().Running; n != 0 {
		w.t.Errorf("%d git processes still running", n)
	}
}

// TestInfoRefsResponse checks the advertisement's framing and headers
// for v0 (service pkt-line and flush first) and v2 (capabilities only),
// streamed chunked.
func TestInfoRefsResponse(t *testing.T) {
	w := newGitWorld(t, nil)
	for _, tc := range []struct{ proto, prefix string }{
		{"", "001e# service=git-upload-pack\n0000"},
		{"version=1", "001e# service=git-upload-pack\n0000000eversion 1\n"},
		{"version=2", "000eversion 2\n"},
	} {
		req, err := http.NewRequest("GET", w.base+"/scm/proj/pub.git/info/refs?service=git-upload-pack", nil)
		must(t, err)
		if tc.proto != "" {
			req.Header.Set("Git-Protocol", tc.proto)
		}
		resp, err := testClient(t).Do(req)
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), tc.prefix) ||
			h.Get("Content-Type") != "application/x-git-upload-pack-advertisement" ||
			!strings.Contains(h.Get("Cache-Control"), "no-cache") ||
			len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			t.Errorf("%q: %d %v %v %q", tc.proto, resp.StatusCode, h, resp.TransferEncoding, body)
		}
	}
}
