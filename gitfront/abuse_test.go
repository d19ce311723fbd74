package gitfront

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.String()
}

// TestGitAbuse sends malformed git requests: each gets the stated 4xx
// and a message, no git process is left and nothing is written.
func TestGitAbuse(t *testing.T) {
	w := newGitWorld(t, func(c *Config) { c.Git.MaxRequestBytes = 4096 })
	outside := t.TempDir()
	must(t, InitBare(context.Background(), outside, "x", "secret"))
	must(t, os.Symlink(filepath.Join(outside, "x", "secret.git"), filepath.Join(w.repos, "proj", "escape.git")))
	authz := w.front.Git().cfg.Authorizer.(*fakeAuthz)
	authz.repos["proj/escape"] = fakeRepo{public: true}
	authz.repos["proj/ghost"] = fakeRepo{public: true}
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "push", "-q", w.url("alice", "alice-pw-S3cret", "pub"), "main")
	head := w.serverRef("pub", "refs/heads/main")

	refs := "/info/refs?service=git-upload-pack"
	up, rp := "/scm/proj/pub.git/git-upload-pack", "/scm/proj/pub.git/git-receive-pack"
	bigWants := strings.Repeat("0032want "+head+"\n", 100) + "0000"
	for _, tc := range []struct {
		name, method, path, ct, enc, proto, body string
		status                                   int
		msg                                      string
	}{
		{"dot-dot project", "GET", "/scm/%2e%2e/pub.git" + refs, "", "", "", "", 400, "must not start"},
		{"traversal in repo", "GET", "/scm/proj/..%2f..%2fetc.git" + refs, "", "", "", "", 404, "end in .git"},
		{"option-like repo", "GET", "/scm/proj/--upload-pack=touch.git" + refs, "", "", "", "", 400, "must not start with '-'"},
		{"option-like project", "GET", "/scm/-p/pub.git" + refs, "", "", "", "", 400, "must not start with '-'"},
		{"double .git", "GET", "/scm/proj/pub.git.git" + refs, "", "", "", "", 400, "must not end in .git"},
		{"bad characters", "GET", "/scm/proj/p%20ub.git" + refs, "", "", "", "", 400, "may hold only"},
		{"no .git", "GET", "/scm/proj/pub/info/refs?service=git-upload-pack", "", "", "", "", 404, "end in .git"},
		{"symlink escape", "GET", "/scm/proj/escape.git" + refs, "", "", "", "", 400, "outside"},
		{"missing on disk", "GET", "/scm/proj/ghost.git" + refs, "", "", "", "", 404, "not found"},
		{"dumb http", "GET", "/scm/proj/pub.git/info/refs", "", "", "", "", 400, "only smart HTTP"},
		{"unknown service", "GET", "/scm/proj/pub.git/info/refs?service=git-shell", "", "", "", "", 400, "only smart HTTP"},
		{"unknown endpoint", "GET", "/scm/proj/pub.git/objects/info/packs", "", "", "", "", 404, "unknown git endpoint"},
		{"POST info/refs", "POST", "/scm/proj/pub.git" + refs, "", "", "", "", 405, "takes GET"},
		{"GET upload-pack", "GET", up, "", "", "", "", 405, "takes POST"},
		{"wrong content type", "POST", up, "text/plain", "", "", "0000", 415, "Content-Type"},
		{"push type to fetch", "POST", up, receiveCT, "", "", "0000", 415, "Content-Type"},
		{"unknown encoding", "POST", up, uploadCT, "br", "", "0000", 415, "Content-Encoding"},
		{"bad gzip", "POST", up, uploadCT, "gzip", "", "0000 not gzip", 400, "gzip"},
		{"cut gzip", "POST", up, uploadCT, "gzip", "", gzipped(bigWants)[:40], 400, "gzip"},
		{"not pkt-lines", "POST", up, uploadCT, "", "", "zzzz", 400, "invalid packet length"},
		{"oversized pkt-line", "POST", rp, receiveCT, "", "", "fff5" + strings.Repeat("x", 70000), 400, "the limit is 65520"},
		{"announced over the limit", "POST", up, uploadCT, "", "", "fff5" + strings.Repeat("x", 70000), 413, "over 4096 bytes"},
		{"no final flush", "POST", up, uploadCT, "", "", "0032want " + head + "\n", 400, "final flush"},
		{"empty body", "POST", up, uploadCT, "", "", "", 400, "final flush"},
		{"garbage command", "POST", up, uploadCT, "", "", "0009junk\n0000", 400, "protocol error"},
		{"body over the limit", "POST", up, uploadCT, "", "", bigWants, 413, "over 4096 bytes"},
		{"gzip over the limit", "POST", up, uploadCT, "gzip", "", gzipped(bigWants), 413, "over 4096 bytes"},
		{"long Git-Protocol", "GET", "/scm/proj/pub.git" + refs, "", "", strings.Repeat("v", 300), "", 400, "Git-Protocol"},
		{"push without flush", "POST", rp, receiveCT, "", "", "0010old new ref\n", 400, "flush-pkt after the commands"},
		{"push bad framing", "POST", rp, receiveCT, "", "", "zzzz0000PACK", 400, "invalid packet length"},
		{"v2 unknown command", "POST", up, uploadCT, "", "version=2", "0010command=evil0001" + "0000", 400, "invalid command"},
		{"v2 unknown fetch argument", "POST", up, uploadCT, "", "version=2", "0012command=fetch\n0001000dbogus-arg0009done\n0000", 400, "unexpected line"},
		{"v2 sha256", "POST", up, uploadCT, "", "version=2", "0012command=fetch\n0019object-format=sha256\n00010009done\n0000", 400, "object format"},
		{"v2 unknown ls-refs argument", "POST", up, uploadCT, "", "version=2", "0014command=ls-refs\n0001000dbogus-arg0000", 400, "unexpected line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, w.base+tc.path, strings.NewReader(tc.body))
			must(t, err)
			for k, v := range map[string]string{"Content-Type": tc.ct, "Content-Encoding": tc.enc, "Git-Protocol": tc.proto} {
				if v != "" {
					req.Header.Set(k, v)
				}
			}
			req.SetBasicAuth("alice", "alice-pw-S3cret")
			resp, err := testClient(t).Do(req)
			must(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.msg) {
				t.Fatalf("%d %q, want %d with %q", resp.StatusCode, body, tc.status, tc.msg)
			}
		})
	}
	// Bodies of unknown length (chunked), plain and gzip-encoded, over the
	// limit: 413 as well.
	for _, enc := range []string{"", "gzip"} {
		body := bigWants
		if enc == "gzip" {
			body = gzipped(bigWants)
		}
		req, err := http.NewRequest("POST", w.base+up, io.NopCloser(strings.NewReader(body)))
		must(t, err)
		req.ContentLength = -1 // chunked
		req.Header.Set("Content-Type", uploadCT)
		if enc != "" {
			req.Header.Set("Content-Encoding", enc)
		}
		req.SetBasicAuth("alice", "alice-pw-S3cret")
		resp, err := testClient(t).Do(req)
		must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || len(req.TransferEncoding) == 0 && req.ContentLength != -1 {
			t.Errorf("chunked %q body over the limit: %d %q", enc, resp.StatusCode, b)
		}
	}
	if got := w.serverRef("pub", "refs/heads/main"); got != head {
		t.Errorf("main moved to %s", got)
	}
	if strings.Contains(w.log.String(), "level=ERROR") {
		t.Errorf("malformed requests logged errors:\n%s", w.log.String())
	}
	w.waitNoGit()
}

// TestGitBodyCutOff sends a request whose body ends before its declared
// length, over a raw connection: 400, and no git process left.
func TestGitBodyCutOff(t *testing.T) {
	w := newGitWorld(t, nil)
	for _, path := range []string{"git-upload-pack", "git-receive-pack"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(w.base, "http://"))
		must(t, err)
		ct := map[string]string{"git-upload-pack": uploadCT, "git-receive-pack": receiveCT}[path]
		fmt.Fprintf(conn, "POST /scm/proj/pub.git/%s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"+
			"Authorization: %s\r\nContent-Length: 1000\r\n\r\n0014command=ls-refs\n0001",
			path, ct, basicHeader("alice", "alice-pw-S3cret"))
		must(t, conn.(*net.TCPConn).CloseWrite())
		must(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "cut off") {
			t.Fatalf("%s cut off: %d %q", path, resp.StatusCode, body)
		}
	}
	w.waitNoGit()
}

// TestGitClientGone: a client that disconnects while git waits for its
// request has the git process killed.
func TestGitClientGone(t *testing.T) {
	w := newGitWorld(t, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(w.base, "http://"))
	must(t, err)
	fmt.Fprintf(conn, "POST /scm/proj/pub.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"+
		"Authorization: %s\r\nTransfer-Encoding: chunked\r\n\r\n", receiveCT, basicHeader("alice", "alice-pw-S3cret"))
	testkit.Eventually(t, 10*time.Second, "git receive-pack running", func() bool {
		return w.front.Git().Stats().Running == 1
	})
	conn.Close()
	w.waitNoGit()
}

// waitNoGit waits until no git process of the server runs and none is a
// child of this process.
func (w *gitWorld) waitNoGit() {
	w.t.Helper()
	testkit.Eventually(w.t, 10*time.Second, "no git process left", func() bool {
		return w.front.Git().Stats().Running == 0 && len(childProcesses()) == 0
	})
}

// childProcesses lists this process's children (Linux; nil elsewhere).
func childProcesses() []string {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var kids []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	return kids
}
