package gitfront

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestGitAuthorizationTable runs real git clients as each kind of caller
// against a private and a public repository and checks the exact outcome:
// success, or the failure git reports (no credentials to offer after 401,
// credentials refused after 401, 403), and that no refused push wrote.
func TestGitAuthorizationTable(t *testing.T) {
	w := newGitWorld(t, nil)
	src := w.workTree(map[string]string{"a": "1\n"})
	for _, repo := range []string{"pub", "priv"} {
		w.mustGit(src, "push", "-q", w.url("alice", "alice-pw-S3cret", repo), "main")
	}
	const (
		ok        = ""
		noCreds   = "could not read Username" // 401, nothing to offer
		badCreds  = "Authentication failed"   // 401 again with credentials
		forbidden = "403"
	)
	callers := []struct{ name, user, secret string }{
		{"anonymous", "", ""},
		{"reader", "bob", "bob-pw-S3cret"},
		{"writer", "alice", "alice-pw-S3cret"},
		{"writer-token", "alice", "tok-alice-0123456789"},
		{"wrong-password", "alice", "wrong-pw-S3cret"},
		{"revoked-token", "carol", "tok-carol-revoked-987"},
	}
	// want[caller][clone pub, push pub, clone priv, push priv]. git sends
	// credentials only after a 401, so a public clone never shows them.
	want := map[string][4]string{
		"anonymous":      {ok, noCreds, noCreds, noCreds},
		"reader":         {ok, forbidden, ok, forbidden},
		"writer":         {ok, ok, ok, ok},
		"writer-token":   {ok, ok, ok, ok},
		"wrong-password": {ok, badCreds, badCreds, badCreds},
		"revoked-token":  {ok, badCreds, badCreds, badCreds},
	}
	for _, c := range callers {
		for i, op := range []string{"clone pub", "push pub", "clone priv", "push priv"} {
			t.Run(c.name+"/"+op, func(t *testing.T) {
				verb, repo, _ := strings.Cut(op, " ")
				url := w.url(c.user, c.secret, repo)
				var out string
				var err error
				branch := fmt.Sprintf("refs/heads/%s-%d", c.name, i)
				if verb == "clone" {
					out, err = w.git("", "clone", "-q", url, filepath.Join(t.TempDir(), "c"))
				} else {
					out, err = w.git(src, "push", "-q", url, "HEAD:"+branch)
				}
				expect := want[c.name][i]
				switch {
				case expect == ok && err != nil:
					t.Fatalf("failed, want success: %v\n%s", err, out)
				case expect != ok && err == nil:
					t.Fatalf("succeeded, want failure %q", expect)
				case expect != ok && !strings.Contains(out, expect):
					t.Fatalf("failed with\n%s\nwant %q", out, expect)
				}
				if verb == "push" {
					pushed := w.serverRef(repo, branch) != ""
					if pushed != (expect == ok) {
						t.Fatalf("branch on the server: %v, want %v", pushed, expect == ok)
					}
				}
			})
		}
	}
	logs := w.log.String()
	for _, user := range []string{"alice", "carol"} {
		if !strings.Contains(logs, "failed login") || !strings.Contains(logs, "user="+user) {
			t.Errorf("no failed login logged for %s:\n%s", user, logs)
		}
	}
}
