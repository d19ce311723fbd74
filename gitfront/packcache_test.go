package gitfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/packcache"
)

// packCacheUploader is the wiring a node uses: the pack cache as the
// UploadPacker, its malformed-request error answered 400 by the front.
func packCacheUploader(pc *packcache.Cache) UploadPacker {
	return UploadPackerFunc(func(ctx context.Context, w io.Writer, repo, dir, proto string, body io.Reader) error {
		_, err := pc.ServeUploadPack(ctx, w, repo, dir, proto, body)
		if errors.Is(err, packcache.ErrMalformed) {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return err
	})
}

// TestPackCacheEndToEnd serves clones through the real pack cache: the
// second identical clone is a hit (no git upload-pack for the pack), a
// push invalidates through OnPush, the next clone sees the new commit,
// and a hit is still authorized.
func TestPackCacheEndToEnd(t *testing.T) {
	cfg := packcache.DefaultConfig(t.TempDir())
	cfg.MinFree = 0
	cfg.Logger = testkit.Logger(t)
	pc, err := packcache.New(cfg)
	must(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	w := newGitWorld(t, func(c *Config) {
		c.Git.UploadPacker = packCacheUploader(pc)
		c.Git.OnPush = func(ctx context.Context, project, repo string) {
			if err := pc.Invalidate(ctx, RepoName(project, repo)); err != nil {
				t.Errorf("invalidate: %v", err)
			}
		}
	})
	alice, bob := w.url("alice", "alice-pw-S3cret", "priv"), w.url("bob", "bob-pw-S3cret", "priv")
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "push", "-q", alice, "main")
	clone := func(url, v string) (string, error) {
		dst := filepath.Join(t.TempDir(), "c")
		out, err := w.git("", "-c", "protocol.version="+v, "clone", "-q", url, dst)
		if err != nil {
			return out, err
		}
		w.mustGit(dst, "fsck", "--no-progress")
		return w.mustGit(dst, "rev-parse", "HEAD"), nil
	}
	for _, v := range []string{"2", "0"} {
		for range 2 {
			if _, err := clone(bob, v); err != nil {
				t.Fatalf("v%s clone: %v", v, err)
			}
		}
	}
	s := pc.Stats()
	if s.Hits < 2 || s.Published < 2 {
		t.Fatalf("pack cache stats after two clones per protocol: %+v", s)
	}
	if _, err := clone(w.url("", "", "priv"), "2"); err == nil {
		t.Fatal("anonymous clone of a private repository through the cache succeeded")
	}
	assertMalformed400(t, w, "0009junk\n0000")
	second := w.commit(src, map[string]string{"a": "2\n"})
	w.mustGit(src, "push", "-q", alice, "main")
	for _, v := range []string{"2", "0"} {
		head, err := clone(bob, v)
		if err != nil || head != second {
			t.Fatalf("v%s clone after push: %s %v, want %s", v, head, err, second)
		}
	}
}

// assertMalformed400 posts body to proj/priv's upload-pack as bob and
// expects 400.
func assertMalformed400(t *testing.T, w *gitWorld, body string) {
	t.Helper()
	req, err := http.NewRequest("POST", w.base+"/scm/proj/priv.git/git-upload-pack", strings.NewReader(body))
	must(t, err)
	req.Header.Set("Content-Type", uploadCT)
	req.Header.Set("Git-Protocol", "version=2")
	req.SetBasicAuth("bob", "bob-pw-S3cret")
	resp, err := testClient(t).Do(req)
	must(t, err)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed request through the pack cache: %d %q", resp.StatusCode, msg)
	}
}
