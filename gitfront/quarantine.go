package gitfront

import (
	"cmp"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// quarantinePrefix names the directories git receive-pack receives a
// pack into (objects/tmp_objdir-incoming-XXXXXX) before it checks it and
// moves its objects in. receive-pack removes its own when it exits; one
// killed mid-push (SIGKILL, its node dying) leaves it behind.
const quarantinePrefix = "tmp_objdir-incoming-"

// sweepQuarantines removes the stale quarantine directories of the
// repository in dir. It runs after a push that PushGuard said was the
// repository's only one in progress on any node, so no receive-pack is
// writing any quarantine of it; QuarantineAge guards a push begun since
// (its directory is new) and anything else that escaped that knowledge.
func (g *GitHandler) sweepQuarantines(q *gitRequest, dir string) {
	n, err := sweepQuarantines(dir, time.Now().Add(-g.cfg.QuarantineAge))
	g.c.swept.Add(uint64(n))
	if n > 0 {
		g.cfg.Logger.Info("gitfront: removed stale push quarantines", "repo", q.name(), "count", n)
	}
	if err != nil {
		g.cfg.Logger.Warn("gitfront: sweeping push quarantines", "repo", q.name(), "err", err)
	}
}

// sweepQuarantines removes every objects/tmp_objdir-incoming-* directory
// under the bare repository dir in which nothing (the directory itself,
// nor anything in it) changed after cutoff, and returns how many it
// removed.
func sweepQuarantines(dir string, cutoff time.Time) (int, error) {
	objects := filepath.Join(dir, "objects")
	entries, err := os.ReadDir(objects)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), quarantinePrefix) {
			continue
		}
		path := filepath.Join(objects, e.Name())
		newest, err := newestChange(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if newest.After(cutoff) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, errs[0]
	}
	return n, nil
}

// newestChange is the latest modification time of root and everything
// under it.
func newestChange(root string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if t := info.ModTime(); t.After(newest) {
			newest = t
		}
		return nil
	})
	return newest, err
}

// SweepAllQuarantines removes the push quarantines under every bare
// repository of reposDir (PROJECT/SLUG.git) in which nothing changed for
// olderThan, and returns how many it removed. A node runs it at start-up:
// pushes killed with their node leave quarantines that no later push of
// their repository may come to sweep. The repositories are shared with
// the other nodes, whose pushes may be under way; olderThan (QuarantineAge,
// an hour by default) is what keeps their quarantines, as in the sweep
// after a push. It stops early when ctx ends.
func SweepAllQuarantines(ctx context.Context, reposDir string, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	projects, err := os.ReadDir(reposDir)
	if err != nil {
		return 0, err
	}
	n := 0
	var first error
	for _, p := range projects {
		if !p.IsDir() {
			continue
		}
		repos, err := os.ReadDir(filepath.Join(reposDir, p.Name()))
		if err != nil {
			first = cmp.Or(first, err)
			continue
		}
		for _, r := range repos {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			if !r.IsDir() || !strings.HasSuffix(r.Name(), ".git") {
				continue
			}
			m, err := sweepQuarantines(filepath.Join(reposDir, p.Name(), r.Name()), cutoff)
			n += m
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				first = cmp.Or(first, err)
			}
		}
	}
	return n, first
}
