package packcache

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/pktline"
	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) {
	// Tests run git with a fixed identity and no user or system config.
	for k, v := range map[string]string{
		"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
		"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com",
		"GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com",
		"GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
		"GIT_TERMINAL_PROMPT": "0",
	} {
		os.Setenv(k, v)
	}
	testkit.MainNoLeaks(m, 10*time.Second)
}

// run runs git in dir and returns its trimmed output, failing the test on
// error.
func run(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, args...)
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// repo is a bare repository served to clients, and a work tree that pushes
// to it.
type repo struct {
	bare, work string
}

// newRepo makes a repository with history: files of incompressible
// content (so packs span many writes), branches, a lightweight and an
// annotated tag. size is the number of commits.
func newRepo(t testing.TB, commits int) *repo {
	t.Helper()
	dir := t.TempDir()
	r := &repo{bare: filepath.Join(dir, "srv.git"), work: filepath.Join(dir, "work")}
	run(t, dir, "init", "-q", "--bare", "-b", "main", r.bare)
	run(t, r.bare, "config", "uploadpack.allowFilter", "true")
	run(t, dir, "init", "-q", "-b", "main", r.work)
	rng := rand.New(rand.NewPCG(1, uint64(commits)))
	for i := range commits {
		r.writeFile(t, fmt.Sprintf("dir%d/file%d.bin", i%4, i), randomBytes(rng, 16<<10))
		run(t, r.work, "add", "-A")
		run(t, r.work, "commit", "-q", "-m", fmt.Sprintf("commit %d", i))
		if i == commits/2 {
			run(t, r.work, "branch", "side")
			run(t, r.work, "tag", "light")
			run(t, r.work, "tag", "-a", "-m", "annotated", "v1")
		}
	}
	run(t, r.work, "remote", "add", "origin", r.bare)
	run(t, r.work, "push", "-q", "origin", "main", "side", "--tags")
	return r
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func (r *repo) writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	p := filepath.Join(r.work, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// push commits a new file on main and pushes it; it returns the commit.
func (r *repo) push(t testing.TB, msg string) string {
	t.Helper()
	r.writeFile(t, "pushed-"+msg, []byte(msg))
	run(t, r.work, "add", "-A")
	run(t, r.work, "commit", "-q", "-m", msg)
	run(t, r.work, "push", "-q", "origin", "main")
	return run(t, r.work, "rev-parse", "HEAD")
}

// server is a smart-HTTP git server for tests: info/refs straight from
// git, POSTs through the cache (or straight to git when direct is set).
// It records the POST bodies.
type server struct {
	*httptest.Server
	cache  *Cache
	repos  map[string]string // name → bare path
	direct bool

	mu    sync.Mutex
	posts []post
	errs  []error // ServeUploadPack errors
}

type post struct {
	protocol string
	body     []byte
}

func newServer(t testing.TB, c *Cache, repos map[string]string, direct bool) *server {
	s := &server{cache: c, repos: repos, direct: direct}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

func (s *server) url(name string) string { return s.URL + "/" + name }

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	path, ok := s.repos[name]
	switch {
	case !ok:
		http.NotFound(w, r)
	case rest == "info/refs" && r.URL.Query().Get("service") == "git-upload-pack":
		s.advertise(w, r, path)
	case rest == "git-upload-pack" && r.Method == http.MethodPost:
		s.uploadPack(w, r, name, path)
	default:
		http.NotFound(w, r)
	}
}

func (s *server) advertise(w http.ResponseWriter, r *http.Request, path string) {
	proto := r.Header.Get("Git-Protocol")
	w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
	if ParseProtocol(proto) != 2 {
		pw := pktline.NewWriter(w)
		_ = pw.Line("# service=git-upload-pack")
		_ = pw.Flush()
	}
	cmd := exec.CommandContext(r.Context(), "git", "upload-pack", "--stateless-rpc", "--advertise-refs", path)
	cmd.Env = append(os.Environ(), "GIT_PROTOCOL="+proto)
	cmd.Stdout = w
	_ = cmd.Run()
}

func (s *server) uploadPack(w http.ResponseWriter, r *http.Request, name, path string) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		return
	}
	proto := r.Header.Get("Git-Protocol")
	s.mu.Lock()
	s.posts = append(s.posts, post{proto, raw})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
	if s.direct {
		cmd := exec.CommandContext(r.Context(), "git", "upload-pack", "--stateless-rpc", path)
		cmd.Env = append(os.Environ(), "GIT_PROTOCOL="+proto)
		cmd.Stdin, cmd.Stdout = bytes.NewReader(raw), w
		_ = cmd.Run()
		return
	}
	s.serveCached(w, r, name, path, proto, raw)
}

func (s *server) serveCached(w http.ResponseWriter, r *http.Request, name, path, proto string, raw []byte) {
	resp, err := s.cache.Open(r.Context(), name, path, proto, bytes.NewReader(raw))
	if err != nil {
		s.recordErr(err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	defer resp.Close()
	if n, ok := resp.Size(); ok {
		w.Header().Set("Content-Length", fmt.Sprint(n))
	}
	if _, err := resp.Stream(r.Context(), w); err != nil {
		s.recordErr(err)
	}
}

func (s *server) recordErr(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

func (s *server) lastPost(t testing.TB) post {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.posts) == 0 {
		t.Fatal("no POST recorded")
	}
	return s.posts[len(s.posts)-1]
}

// clone makes a bare clone of url with extra options; it returns the
// clone's directory.
func clone(t testing.TB, url string, opts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "clone")
	out, err := cloneErr(url, dir, opts...)
	if err != nil {
		t.Fatalf("git clone %v: %v\n%s", opts, err, out)
	}
	return dir
}

func cloneErr(url, dir string, opts ...string) (string, error) {
	args := slices.Concat([]string{"clone", "-q", "--bare"}, opts, []string{url, dir})
	return runErr("", args...)
}

// objects returns the sorted object list of a clone, after checking it
// with git fsck.
func objects(t testing.TB, dir string) []string {
	t.Helper()
	run(t, dir, "fsck", "--no-progress")
	out := run(t, dir, "cat-file", "--batch-all-objects", "--batch-check")
	lines := strings.Split(out, "\n")
	slices.Sort(lines)
	return lines
}

// newCache returns a cache in a fresh directory; cfg's Dir is replaced.
func newCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testkit.Logger(t)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pkts builds a request body: "" is a flush, "|" a delim, anything else
// a data line.
func pkts(lines ...string) []byte {
	var b bytes.Buffer
	w := pktline.NewWriter(&b)
	for _, l := range lines {
		switch l {
		case "":
			_ = w.Flush()
		case "|":
			_ = w.Delim()
		default:
			_ = w.Line(l)
		}
	}
	return b.Bytes()
}

// serve sends one request through the cache and returns the response.
func serve(t testing.TB, c *Cache, name, path, proto string, body []byte) ([]byte, Result, error) {
	t.Helper()
	var out bytes.Buffer
	res, err := c.ServeUploadPack(context.Background(), &out, name, path, proto, bytes.NewReader(body))
	return out.Bytes(), res, err
}
