package gitfront

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// maxName bounds project and repository names.
const maxName = 128

// ValidName checks a project key or repository name: 1 to 128 of
// [A-Za-z0-9._-], not starting with '-' (git would read it as an option)
// or '.' (".", "..", hidden directories), and not ending in ".git" or
// ".lock" (the on-disk directory adds ".git"; git reserves ".lock").
// It returns nil or an error wrapping ErrBadName that says why.
func ValidName(name string) error {
	switch {
	case name == "" || len(name) > maxName:
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrBadName, name, maxName)
	case name[0] == '-' || name[0] == '.':
		return fmt.Errorf("%w: %q must not start with '-' or '.'", ErrBadName, name)
	case strings.HasSuffix(name, ".git") || strings.HasSuffix(name, ".lock"):
		return fmt.Errorf("%w: %q must not end in .git or .lock", ErrBadName, name)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return fmt.Errorf("%w: %q may hold only letters, digits, '.', '_' and '-'", ErrBadName, name)
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// repoDir is where project/repo lives under root, unchecked.
func repoDir(root, project, repo string) string {
	return filepath.Join(root, project, repo+".git")
}

// resolveRepo returns the real path of project/repo's bare repository
// under root (root itself already resolved by EvalSymlinks). Symlinks are
// followed, but the result must stay inside root; a missing directory or
// one that is not a bare repository is ErrNotFound, an escape ErrBadName.
func resolveRepo(root, project, repo string) (string, error) {
	if err := errors.Join(ValidName(project), ValidName(repo)); err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(repoDir(root, project, repo))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s/%s", ErrNotFound, project, repo)
	}
	if err != nil {
		return "", fmt.Errorf("resolve %s/%s: %w", project, repo, err)
	}
	if !strings.HasPrefix(real, root+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %s/%s leads outside the repositories directory", ErrBadName, project, repo)
	}
	if !isBareRepo(real) {
		return "", fmt.Errorf("%w: %s/%s is not a bare repository", ErrNotFound, project, repo)
	}
	return real, nil
}

// isBareRepo is a cheap check that dir holds a bare repository, so git is
// never started in a directory it would not recognise.
func isBareRepo(dir string) bool {
	head, err := os.Stat(filepath.Join(dir, "HEAD"))
	if err != nil || !head.Mode().IsRegular() {
		return false
	}
	objs, err := os.Stat(filepath.Join(dir, "objects"))
	return err == nil && objs.IsDir()
}

// InitBare creates the bare repository project/repo under reposDir
// (reposDir/project/repo.git), with the configuration the front relies on
// (partial clone allowed, default branch main). The repository appears
// atomically: it is built in a temporary directory and renamed into place,
// so a concurrent clone never sees half of it. Errors: ErrBadName,
// ErrExists, or the file system's. ctx bounds (and kills) the git that
// checks an unusual branch name (checkBranch); the repository itself is
// written without git (initLayout).
//
// Until a push brings the default branch, HEAD names a branch that does
// not exist; the first push that brings branches but not that one makes
// its first branch the default (as Bitbucket does).
func InitBare(ctx context.Context, reposDir, project, repo string) error {
	return InitBareBranch(ctx, reposDir, project, repo, "")
}

// InitBareBranch is InitBare with the default branch named: HEAD points
// at refs/heads/branch ("" is main). A name git refuses as a branch is
// ErrBadName.
func InitBareBranch(ctx context.Context, reposDir, project, repo, branch string) error {
	if err := errors.Join(ValidName(project), ValidName(repo)); err != nil {
		return err
	}
	if branch == "" {
		branch = "main"
	}
	if err := checkBranch(ctx, branch); err != nil {
		return err
	}
	parent := filepath.Join(reposDir, project)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("init %s/%s: %w", project, repo, err)
	}
	final := repoDir(reposDir, project, repo)
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("%w: %s/%s", ErrExists, project, repo)
	}
	tmp, err := os.MkdirTemp(parent, ".init-*")
	if err != nil {
		return fmt.Errorf("init %s/%s: %w", project, repo, err)
	}
	defer os.RemoveAll(tmp)
	if err := initLayout(tmp, branch); err != nil {
		return fmt.Errorf("init %s/%s: %w", project, repo, err)
	}
	return publish(tmp, final, project, repo)
}

// publish renames tmp to final unless final is there already. A rename
// onto a non-empty directory fails (ENOTEMPTY), so of two concurrent
// InitBare calls exactly one wins; the other gets ErrExists.
func publish(tmp, final, project, repo string) error {
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("%w: %s/%s", ErrExists, project, repo)
	}
	if err := os.Rename(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return fmt.Errorf("%w: %s/%s", ErrExists, project, repo)
		}
		return fmt.Errorf("init %s/%s: %w", project, repo, err)
	}
	return nil
}

// checkBranch says whether branch is a branch name: names plainBranch
// knows git accepts are accepted here, and git is asked about the rest.
func checkBranch(ctx context.Context, branch string) error {
	if strings.HasPrefix(branch, "-") {
		return fmt.Errorf("%w: %q is not a branch name", ErrBadName, branch)
	}
	if plainBranch(branch) {
		return nil
	}
	cmd := exec.CommandContext(ctx, "git", "check-ref-format", "refs/heads/"+branch)
	cmd.Env = gitEnv(nil)
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); ok {
			return fmt.Errorf("%w: %q is not a branch name", ErrBadName, branch)
		}
		return fmt.Errorf("git check-ref-format: %w", err)
	}
	return nil
}

// plainBranch reports whether branch is a name git's check-ref-format
// surely accepts under refs/heads/, without running it: '/'-separated
// components, each one or more of [A-Za-z0-9._-], none starting with '.'
// or ending with '.' or ".lock", and no "..". That charset holds none of
// the characters git refuses (controls, space, ~ ^ : ? * [ \ and "@{"), so
// these are all of its rules that can apply. False says only "ask git":
// a name outside this set may still be valid (TestPlainBranchAgreesWithGit
// and FuzzPlainBranch check the claim against git itself).
func plainBranch(branch string) bool {
	if branch == "" || strings.Contains(branch, "..") {
		return false
	}
	for _, c := range strings.Split(branch, "/") {
		if c == "" || c[0] == '.' || c[len(c)-1] == '.' || strings.HasSuffix(c, ".lock") {
			return false
		}
		for i := 0; i < len(c); i++ {
			if !nameByte(c[i]) {
				return false
			}
		}
	}
	return true
}

// repoUploadPackConfig is appended to a new repository's config: partial
// clones (--filter) and fetches of a reachable commit by its id, for a git
// run on the repository without uploadPackConfig's flags (the pack cache's
// upload-pack, an operator's own).
const repoUploadPackConfig = "[uploadpack]\n\tallowFilter = true\n\tallowReachableSHA1InWant = true\n"

// initLayout makes the empty directory dir a bare repository whose HEAD
// names branch, without running git: the files 'git init --bare
// --template=' writes on a file system with file modes (HEAD, config,
// objects/info, objects/pack, refs/heads, refs/tags), an empty hooks
// directory for an operator's server hooks, and the upload-pack settings
// in the config. Every one is private to the node's user (0700/0600, as
// the rest of the data directory). It costs a dozen system calls where
// git init cost a process (about 7 ms of CPU, most of the cost of a
// repository's creation); TestInitLayoutIsGits compares the two layouts
// and has git read this one back.
func initLayout(dir, branch string) error {
	for _, d := range []string{"objects/info", "objects/pack", "refs/heads", "refs/tags", "hooks"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	files := []struct{ name, text string }{
		{"config", initConfig + repoUploadPackConfig},
		{"HEAD", "ref: refs/heads/" + branch + "\n"}, // last: with HEAD, dir is a repository (isBareRepo)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.text), 0o600); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}
	return nil
}

// initConfig is the core section 'git init --bare' writes on a file system
// with file modes, symbolic links and case-sensitive names (Linux's).
const initConfig = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"

// firstLine is the first line of b, for error messages.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
