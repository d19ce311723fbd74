package gitfront

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// gitWorld is a front on a test server over a repositories directory, and
// a git client environment isolated from the machine's configuration.
type gitWorld struct {
	t      *testing.T
	front  *Front
	base   string // http://127.0.0.1:port
	repos  string // the server's ReposDir
	home   string // the client's HOME
	log    *testkit.SyncBuffer
	pushes atomic.Int64

	mu   sync.Mutex
	seen map[string]int // request features seen by the server
}

// record notes the features of a git request: gzip and chunked bodies,
// protocol v2.
func (w *gitWorld) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		if r.Header.Get("Content-Encoding") == "gzip" {
			w.seen["gzip"]++
		}
		if slices.Contains(r.TransferEncoding, "chunked") {
			w.seen["chunked"]++
		}
		if isV2(r.Header.Get("Git-Protocol")) {
			w.seen["v2"]++
		}
		w.mu.Unlock()
		next.ServeHTTP(rw, r)
	})
}

// saw asserts that the server saw a request with feature.
func (w *gitWorld) saw(feature string) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[feature] == 0 {
		w.t.Errorf("no request with %s reached the server", feature)
	}
}

// newGitWorld serves proj/pub (public) and proj/priv (private) with
// testAuth and testAuthz; mod may adjust the config.
func newGitWorld(t *testing.T, mod func(*Config)) *gitWorld {
	t.Helper()
	w := &gitWorld{t: t, repos: t.TempDir(), home: t.TempDir(), seen: map[string]int{}}
	for _, r := range []string{"pub", "priv"} {
		if err := InitBare(context.Background(), w.repos, "proj", r); err != nil {
			t.Fatal(err)
		}
	}
	logger, buf := capturedLogger()
	w.log = buf
	cfg := Config{
		Web:           webHandler(),
		Authenticator: testAuth(),
		Logger:        logger,
		Git: GitConfig{ReposDir: w.repos, Authorizer: testAuthz(),
			OnPush: func(context.Context, string, string) { w.pushes.Add(1) }},
	}
	if mod != nil {
		mod(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.front = f
	w.base = serve(t, w.record(f)).URL
	t.Cleanup(func() { assertNoSecrets(t, buf.String()) })
	return w
}

// url is the clone URL of proj/repo with user:secret (none when user is "").
func (w *gitWorld) url(user, secret, repo string) string {
	u, _ := url.Parse(w.base + "/scm/proj/" + repo + ".git")
	if user != "" {
		u.User = url.UserPassword(user, secret)
	}
	return u.String()
}

// git runs a git client command in dir, returning its combined output.
func (w *gitWorld) git(dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(gitEnv(nil), "HOME="+w.home, "XDG_CONFIG_HOME="+w.home,
		"GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustGit runs git and fails the test on error.
func (w *gitWorld) mustGit(dir string, args ...string) string {
	w.t.Helper()
	out, err := w.git(dir, args...)
	if err != nil {
		w.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

// workTree makes a local repository with one commit holding files.
func (w *gitWorld) workTree(files map[string]string) string {
	w.t.Helper()
	dir := w.t.TempDir()
	w.mustGit(dir, "init", "-q", "-b", "main")
	w.commit(dir, files)
	return dir
}

// commit writes files into dir and commits them, returning the commit id.
func (w *gitWorld) commit(dir string, files map[string]string) string {
	w.t.Helper()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			w.t.Fatal(err)
		}
	}
	w.mustGit(dir, "add", "-A")
	w.mustGit(dir, "commit", "-q", "-m", fmt.Sprintf("commit %d files", len(files)))
	return w.mustGit(dir, "rev-parse", "HEAD")
}

// serverRef is the id of ref in the server's proj/repo, or "" if absent.
func (w *gitWorld) serverRef(repo, ref string) string {
	out, err := w.git(w.repos, "--git-dir", repoDir(w.repos, "proj", repo), "rev-parse", "--verify", "-q", ref)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}
