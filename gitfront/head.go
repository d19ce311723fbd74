package gitfront

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// adoptPushedBranch points a repository's HEAD at a branch a push brought
// when HEAD names a branch that does not exist: a new repository whose
// first push has no main (or whatever branch it was created with) takes
// the first branch of that push as its default, as Bitbucket does, so
// clones check it out. It returns the branch it chose, or "" when HEAD
// was already good, is detached, or the push created no branch.
func adoptPushedBranch(ctx context.Context, dir string, updates []RefUpdate) (string, error) {
	head, err := gitOutput(ctx, dir, "symbolic-ref", "-q", "HEAD")
	if err != nil || head == "" {
		return "", nil // detached: an operator's choice
	}
	refs, err := gitOutput(ctx, dir, "for-each-ref", "--format=%(refname)", "refs/heads/")
	if err != nil {
		return "", err
	}
	exists := map[string]bool{}
	for line := range strings.Lines(refs) {
		exists[strings.TrimSpace(line)] = true
	}
	if exists[head] {
		return "", nil
	}
	for _, u := range updates {
		if strings.HasPrefix(u.Ref, "refs/heads/") && !u.Deleted() && exists[u.Ref] {
			if _, err := gitOutput(ctx, dir, "symbolic-ref", "HEAD", u.Ref); err != nil {
				return "", err
			}
			return strings.TrimPrefix(u.Ref, "refs/heads/"), nil
		}
	}
	return "", nil
}

// gitOutput runs git in the bare repository dir and returns its output,
// trimmed.
func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"--git-dir", dir}, args...)...)
	cmd.Env = gitEnv(nil)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("git %s: %w: %s", args[0], err, firstLine(stderr))
	}
	return strings.TrimSpace(string(out)), nil
}
