package rest

import (
	"context"
	"errors"
	"slices"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/l2cache"
)

// Push is a push to a repository, as the domain records it.
type Push struct {
	Project, Repo string
	// Branches are those the push asked to create or move, each with the
	// object it asked for (gitfront.PushedBranches).
	Branches map[string]string
	// BranchesAt reports which of the given branches now point at the
	// given objects (gitfront.BranchesAt on the repository): git may have
	// refused some updates. It is asked only when an open pull request
	// comes from one of Branches.
	BranchesAt func(ctx context.Context, want map[string]string) (map[string]bool, error)
}

// RecordPush records a push in the domain: it marks the repository
// modified in the database and drops its cached row on every node, and
// gives the OPEN pull requests whose source branch the push moved a new
// version, through the L2 cache (c may be nil: nothing cached).
//
// The writes and the evictions run even if ctx is cancelled once they
// began (writeContext), and the row is evicted after an error that may
// hide the touch's commit (mayHaveWritten).
func RecordPush(ctx context.Context, db *domain.Store, c *l2cache.Cache, p Push) error {
	r, err := db.Repository(ctx, p.Project, p.Repo)
	if err != nil {
		return err
	}
	ctx, cancel := writeContext(ctx)
	defer cancel()
	if err := db.TouchRepository(ctx, r.ID); err != nil {
		if mayHaveWritten(err) {
			err = errors.Join(err, EvictRepository(ctx, c, r))
		}
		return err
	}
	return errors.Join(EvictRepository(ctx, c, r), recordMovedBranches(ctx, db, c, r, p))
}

// recordMovedBranches bumps the OPEN pull requests from the branches the
// push moved: those it asked to update that now point where it asked.
func recordMovedBranches(ctx context.Context, db *domain.Store, c *l2cache.Cache, r domain.Repository, p Push) error {
	branches := make([]string, 0, len(p.Branches))
	for b := range p.Branches {
		branches = append(branches, b)
	}
	slices.Sort(branches)
	ids, err := db.OpenPullRequestsFrom(ctx, r.ID, branches)
	if err != nil || len(ids) == 0 {
		return err
	}
	moved, err := p.BranchesAt(ctx, p.Branches)
	if err != nil {
		return err
	}
	var bump []int64
	for _, id := range ids {
		pr, err := db.PullRequest(ctx, id)
		if err != nil {
			return err
		}
		if moved[pr.FromBranch] {
			bump = append(bump, id)
		}
	}
	if len(bump) == 0 {
		return nil
	}
	return ChangePullRequests(ctx, c, bump, func(ctx context.Context) error {
		_, err := db.SourceMoved(ctx, bump)
		return err
	})
}
