package gitfront

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A new repository's first push that brings no main makes its first
// branch the default: HEAD points there and a clone checks it out. A
// later push leaves a HEAD that names an existing branch alone.
func TestFirstPushWithoutMainSetsHead(t *testing.T) {
	w := newGitWorld(t, nil)
	alice := w.url("alice", "alice-pw-S3cret", "pub")
	head := func() string {
		return w.mustGit(w.repos, "--git-dir", repoDir(w.repos, "proj", "pub"), "symbolic-ref", "HEAD")
	}
	if got := head(); got != "refs/heads/main" {
		t.Fatalf("a new repository's HEAD is %s, want refs/heads/main", got)
	}
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "branch", "-m", "main", "trunk")
	w.mustGit(src, "branch", "feature")
	w.mustGit(src, "push", "-q", alice, "trunk")
	if got := head(); got != "refs/heads/trunk" {
		t.Fatalf("after a first push of trunk HEAD is %s", got)
	}
	dst := filepath.Join(t.TempDir(), "c")
	w.mustGit("", "clone", "-q", w.url("", "", "pub"), dst)
	if got := w.mustGit(dst, "rev-parse", "--abbrev-ref", "HEAD"); got != "trunk" {
		t.Fatalf("the clone checked out %q, want trunk", got)
	}
	w.mustGit(src, "push", "-q", alice, "feature", "trunk:main")
	if got := head(); got != "refs/heads/trunk" {
		t.Fatalf("a later push moved HEAD to %s", got)
	}

	// A push to the repository whose HEAD names an existing branch
	// changes nothing; a refused push sets nothing.
	priv := w.url("alice", "alice-pw-S3cret", "priv")
	other := w.workTree(map[string]string{"b": "2\n"})
	w.mustGit(other, "push", "-q", priv, "main")
	if got := w.mustGit(w.repos, "--git-dir", repoDir(w.repos, "proj", "priv"), "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Fatalf("a push of main left HEAD at %s", got)
	}
}

// The create call may name the default branch; git's rules decide what a
// branch name is.
func TestInitBareBranch(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if err := InitBareBranch(ctx, dir, "p", "r", "develop"); err != nil {
		t.Fatal(err)
	}
	out, err := gitOutput(ctx, repoDir(dir, "p", "r"), "symbolic-ref", "HEAD")
	if err != nil || out != "refs/heads/develop" {
		t.Fatalf("HEAD %q, %v", out, err)
	}
	for _, bad := range []string{"a..b", "-x", "with space", "x.lock", "a~1", "end/"} {
		if err := InitBareBranch(ctx, dir, "p", "bad", bad); !errors.Is(err, ErrBadName) {
			t.Errorf("branch %q: %v, want ErrBadName", bad, err)
		}
	}
	if _, err := gitOutput(ctx, repoDir(dir, "p", "bad"), "symbolic-ref", "HEAD"); err == nil {
		t.Error("a refused branch name left a repository behind")
	}
}

// PushedBranches keeps what a push asked to create or move; BranchesAt
// says which of them git really moved there.
func TestPushedBranchesAndBranchesAt(t *testing.T) {
	zero := strings.Repeat("0", 40)
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	got := PushedBranches([]RefUpdate{{zero, a, "refs/heads/new"}, {a, b, "refs/heads/moved"}, {a, zero, "refs/heads/gone"},
		{a, a, "refs/heads/same"}, {zero, a, "refs/tags/v1"}})
	if len(got) != 2 || got["new"] != a || got["moved"] != b {
		t.Fatalf("PushedBranches = %v", got)
	}
	w := newGitWorld(t, nil)
	src := w.workTree(map[string]string{"a": "1\n"})
	first := w.mustGit(src, "rev-parse", "HEAD")
	w.mustGit(src, "branch", "other")
	w.mustGit(src, "push", "-q", w.url("alice", "alice-pw-S3cret", "pub"), "main", "other")
	at, err := BranchesAt(context.Background(), repoDir(w.repos, "proj", "pub"),
		map[string]string{"main": first, "other": b, "missing": first})
	if err != nil || len(at) != 1 || !at["main"] {
		t.Fatalf("BranchesAt = %v, %v; want main only", at, err)
	}
	if _, err := BranchesAt(context.Background(), filepath.Join(t.TempDir(), "nope.git"), map[string]string{"main": first}); err == nil {
		t.Fatal("BranchesAt of no repository succeeded")
	}
}

// A new repository's config holds the upload-pack settings, as git reads
// them, and git accepts it with no template copied.
func TestInitBareConfig(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if err := InitBareBranch(ctx, dir, "p", "r", ""); err != nil {
		t.Fatal(err)
	}
	repo := repoDir(dir, "p", "r")
	for _, key := range []string{"uploadpack.allowFilter", "uploadpack.allowReachableSHA1InWant", "core.bare"} {
		if got, err := gitOutput(ctx, repo, "config", "--bool", "--get", key); err != nil || got != "true" {
			t.Errorf("%s = %q, %v; want true", key, got, err)
		}
	}
	if got, err := gitOutput(ctx, repo, "symbolic-ref", "HEAD"); err != nil || got != "refs/heads/main" {
		t.Errorf("HEAD %q, %v", got, err)
	}
	if _, err := gitOutput(ctx, repo, "fsck", "--no-progress"); err != nil {
		t.Errorf("fsck: %v", err)
	}
}

// plainBranchCases are names on both sides of plainBranch's line, and of
// git's.
var plainBranchCases = []string{"main", "develop", "feature/x-1", "release/2.0", "a_b", "A.B", "x.lockx", "v1.2.3",
	"a..b", ".hidden", "a/.b", "end.", "end/", "/start", "a//b", "x.lock", "a/x.lock/b", "with space", "a~1", "a^b", "a:b",
	"a?b", "a*b", "a[b", `a\b`, "a@{b", "@", "a@b", "ü", "-x", "", "a/b/c/d", "..", ".", "a/.", "HEAD", "a\x7fb"}

// What plainBranch accepts, git accepts: it only skips git for names git
// would pass.
func TestPlainBranchAgreesWithGit(t *testing.T) {
	for _, b := range plainBranchCases {
		checkPlainBranch(t, b)
	}
	if !plainBranch("main") || !plainBranch("feature/x-1") {
		t.Error("plainBranch refuses the plain names it exists for")
	}
}

func checkPlainBranch(t *testing.T, b string) {
	if !plainBranch(b) {
		return
	}
	cmd := exec.Command("git", "check-ref-format", "refs/heads/"+b)
	cmd.Env = gitEnv(nil)
	if err := cmd.Run(); err != nil {
		t.Errorf("plainBranch(%q) is true, git check-ref-format says %v", b, err)
	}
}

func FuzzPlainBranch(f *testing.F) {
	for _, b := range plainBranchCases {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b string) {
		if strings.ContainsRune(b, 0) {
			return // not an argument a process can take
		}
		checkPlainBranch(t, b)
	})
}

// initLayout writes what 'git init --bare --template=' writes, plus the
// hooks directory and the upload-pack settings: the same files, HEAD and
// configuration as git's own init followed by the same two additions (as
// gitfront made repositories before it wrote them itself), which git
// then reads, pushes to and checks without complaint.
func TestInitLayoutIsGits(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	ours, theirs := filepath.Join(root, "ours.git"), filepath.Join(root, "theirs.git")
	if err := os.Mkdir(ours, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := initLayout(ours, "trunk"); err != nil {
		t.Fatal(err)
	}
	gitInitBare(t, theirs, "trunk")
	if a, b := layout(t, ours), layout(t, theirs); !slices.Equal(a, b) {
		t.Errorf("files differ:\nours   %q\ngit's  %q", a, b)
	}
	for _, name := range []string{"HEAD", "config"} {
		a, _ := os.ReadFile(filepath.Join(ours, name))
		b, _ := os.ReadFile(filepath.Join(theirs, name))
		if string(a) != string(b) {
			t.Errorf("%s differs:\nours  %q\ngit's %q", name, a, b)
		}
	}
	a, err := gitOutput(ctx, ours, "config", "--local", "--list")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := gitOutput(ctx, theirs, "config", "--local", "--list"); err != nil || a != b {
		t.Errorf("git reads the configs differently (%v):\nours  %s\ngit's %s", err, a, b)
	}
	// A push into ours, then a clone from it: git takes it as its own.
	work := filepath.Join(root, "work")
	for _, args := range [][]string{{"init", "--quiet", "-b", "trunk", work},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "--allow-empty", "-m", "one"},
		{"-C", work, "push", "--quiet", ours, "trunk"},
		{"clone", "--quiet", ours, filepath.Join(root, "clone")},
		{"-C", ours, "fsck", "--no-progress", "--strict"}} {
		cmd := exec.Command("git", args...)
		cmd.Env = gitEnv(nil)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
}

// layout lists dir's files and directories, relative, with their kind.
func layout(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		kind := "file"
		if d.IsDir() {
			kind = "dir"
		}
		out = append(out, rel+" "+kind)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// gitInitBare is what InitBareBranch ran before it wrote the layout
// itself (initLayout): one git init with no template, then the hooks
// directory and the upload-pack settings appended to git's config.
func gitInitBare(tb testing.TB, dir, branch string) {
	tb.Helper()
	cmd := exec.Command("git", "-c", "init.defaultBranch="+branch, "init", "--bare", "--quiet", "--template=", dir)
	cmd.Env = gitEnv(nil)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("git init: %v: %s", err, out)
	}
	if err := os.Mkdir(filepath.Join(dir, "hooks"), 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "config"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = f.WriteString(repoUploadPackConfig)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
}
