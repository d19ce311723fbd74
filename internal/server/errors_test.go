package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// send sends a request with a Bearer token ("" for none) and returns the
// status, the header and the body.
func send(t *testing.T, token, method, url string, body io.Reader, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// leaks are words of the database's or the runtime's own that no answer
// may carry.
var leaks = []string{"UNIQUE", "constraint", "sql:", "SQLITE", "sqlite", "goroutine", "panic", ".go:"}

// Every error answer of the node's JSON routes — the store's, the jobs',
// the cache mode's, the keyring's, the cluster view's, the front's, the
// mux's own 404 and 405, and REST's — has one shape,
// {"errors":[{"message": …}]}, and no database text; a REST conflict
// the database found carries a request ID under which its cause is
// logged.
func TestErrorBodiesHaveOneShape(t *testing.T) {
	s := single(t)
	base := "http://" + s.HTTPAddr()
	admin, user := userToken(t, s, "root", true), userToken(t, s, "bob", false)
	ctx := context.Background()
	if _, err := s.DB().CreateProject(ctx, domain.Project{Key: "DUP", Name: "Dup"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().CreateRepository(ctx, "DUP", domain.NewRepository{Name: "r", Slug: "r"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tok, method, path, body string
		want                    int
	}{
		{"", "GET", "/nope", "", 404},
		{admin, "GET", "/v1/nope", "", 404},
		{admin, "POST", "/v1/kv", "", 405},
		{admin, "GET", "/v1/kv/missing", "", 404},
		{admin, "PUT", "/v1/kv/a?cas=x", "v", 400},
		{"", "GET", "/v1/kv", "", 401},
		{user, "GET", "/v1/kv", "", 403},
		{"", "GET", "/v1/cluster", "", 401},
		{"", "GET", "/v1/stats", "", 401},
		{user, "GET", "/v1/snapshot", "", 403},
		{admin, "GET", "/v1/jobs/nope", "", 404},
		{admin, "PATCH", "/v1/jobs/x", "", 405},
		{admin, "GET", "/v1/jobs/x/y/z", "", 404},
		{admin, "PUT", "/v1/jobs/x", "not json", 400},
		{admin, "PUT", "/v1/cache/mode", "x", 400},
		{admin, "PUT", "/v1/cache/mode", `{"mode":"fast"}`, 400},
		{admin, "POST", "/v1/keyring/bogus", "{}", 404},
		{admin, "DELETE", "/v1/raft/peers/nobody", "", 0},
		{"shoal_wrong", "GET", "/v1/cluster", "", 401},
		{admin, "GET", "/rest/api/1.0/projects/NOPE", "", 404},
		{admin, "POST", "/rest/api/1.0/projects", `{"key":"DUP","name":"Again"}`, 409},
		{admin, "POST", "/rest/api/1.0/projects/DUP/repos", `{"name":"r"}`, 409},
		{"", "GET", "/v1/kv/../etc", "", 400},
	} {
		code, h, b := send(t, tc.tok, tc.method, base+tc.path, strings.NewReader(tc.body), map[string]string{"Content-Type": "application/json"})
		var e struct {
			Errors []struct{ Message string }
		}
		if code < 400 || tc.want != 0 && code != tc.want || code >= 500 && code != 503 {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.want)
		}
		if err := json.Unmarshal(b, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Message == "" ||
			!strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d %q is not the error shape", tc.method, tc.path, code, b)
		}
		for _, leak := range leaks {
			if strings.Contains(string(b), leak) {
				t.Errorf("%s %s: %d %s says %q", tc.method, tc.path, code, b, leak)
			}
		}
		if tc.want == 409 && h.Get("X-Request-Id") == "" {
			t.Errorf("%s %s: a conflict the database found, without a request ID", tc.method, tc.path)
		}
	}
}

// The node's data directory and its files are its owner's alone.
func TestDataFilesArePrivate(t *testing.T) {
	s := single(t)
	dir := s.cfg.DataDir
	testkit.Eventually(t, 20*time.Second, "a raft log segment", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "raft", "log", "*"))
		return len(m) > 0
	})
	check := func(path string, want os.FileMode) {
		t.Helper()
		st, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return
		}
		if got := st.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s is %v, want at most %v", path, got, want)
		}
	}
	check(dir, 0o700)
	check(filepath.Join(dir, "raft"), 0o700)
	check(filepath.Join(dir, "LOCK"), 0o600)
	check(s.cfg.DB.URL, 0o600)
	check(s.cfg.Packs.Dir, 0o700)
	check(s.cfg.Git.ReposDir, 0o700)
	files, _ := filepath.Glob(filepath.Join(dir, "raft", "log", "*"))
	files = append(files, filepath.Join(dir, "raft", "node-id"))
	for _, f := range files {
		check(f, 0o600)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(s.cfg.DB.URL + suffix); err == nil {
			check(s.cfg.DB.URL+suffix, 0o600)
		}
	}
}

// Every route that takes a body answers 413 to one over its bound,
// announced (Content-Length, refused before it is read) or not
// (chunked, refused once the bound is passed), gzip-encoded too for git.
func TestOversizedBodiesAre413(t *testing.T) {
	s := singleWith(t, func(c *Config) { c.Git.MaxRequestBytes = 1 << 20 })
	base := "http://" + s.HTTPAddr()
	admin := userToken(t, s, "root", true)
	ctx := context.Background()
	if _, err := s.DB().CreateProject(ctx, domain.Project{Key: "PUB", Name: "Public"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().CreateRepository(ctx, "PUB", domain.NewRepository{Name: "open", Slug: "open", Public: true}); err != nil {
		t.Fatal(err)
	}
	if err := gitfront.InitBare(ctx, s.cfg.Git.ReposDir, "PUB", "open"); err != nil {
		t.Fatal(err)
	}
	wants := strings.Repeat("0032want 1111111111111111111111111111111111111111\n", (1<<20)/50+10) + "00000009done\n"
	for _, tc := range []struct {
		path, method string
		size         int
		body         string
		header       map[string]string
	}{
		{"/v1/kv/big", "PUT", 8<<20 + 1, "", nil},
		{"/v1/jobs/big", "PUT", 1<<20 + 1, "", nil},
		{"/v1/cache/mode", "PUT", 1<<20 + 1, "", nil},
		{"/v1/keyring/install", "POST", 1<<20 + 1, "", nil},
		{"/rest/api/1.0/projects", "POST", 1<<20 + 1, "", map[string]string{"Content-Type": "application/json"}},
		{"/ui/login", "POST", 1<<20 + 1, "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
		{"/scm/PUB/open.git/git-upload-pack", "POST", 0, wants, map[string]string{"Content-Type": "application/x-git-upload-pack-request"}},
	} {
		body := tc.body
		if body == "" { // a JSON string, or a form field, that goes on past the bound
			body = `{"mode":"` + strings.Repeat("x", tc.size) + `"}`
			if tc.path == "/ui/login" {
				body = "username=" + strings.Repeat("x", tc.size)
			}
		}
		for _, chunked := range []bool{false, true} {
			var rd io.Reader = strings.NewReader(body)
			if chunked {
				rd = io.MultiReader(rd) // no length: sent chunked
			}
			code, _, b := send(t, admin, tc.method, base+tc.path, rd, tc.header)
			if code != http.StatusRequestEntityTooLarge {
				t.Errorf("%s %s, %d bytes (chunked %v): %d %.200s", tc.method, tc.path, len(body), chunked, code, b)
			}
		}
	}
	// A snapshot's bound is 1 GiB: announcing more is refused at once.
	conn, err := net.Dial("tcp", s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v1/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", admin, 1<<30+1)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("an announced snapshot of 1 GiB + 1: %v %v", resp, err)
	}
}
