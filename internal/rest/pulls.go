package rest

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/shoal-dev/shoal/internal/domain"
)

// listPullRequests: GET .../pull-requests?state=&start=&limit= — newest
// first. state is OPEN (the default, as in Bitbucket), MERGED, DECLINED
// or ALL. ALL pages the repository's cached pull request collection; a
// single state is a cached query over the pull_requests space.
func (a *api) listPullRequests(w http.ResponseWriter, r *http.Request, p pathParams) error {
	ctx := r.Context()
	key, slug, err := pathRepo(p)
	if err != nil {
		return err
	}
	start, limit, err := a.pageParams(r)
	if err != nil {
		return err
	}
	state, err := stateParam(r)
	if err != nil {
		return err
	}
	repo, err := a.readableRepo(ctx, r, key, slug)
	if err != nil {
		return err
	}
	page, err := a.pullRequestPage(ctx, repo, state, start, limit)
	if err != nil {
		return err
	}
	values, err := a.renderPullRequests(ctx, repo, page.IDs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newPage(values, start, limit, page.More))
	return nil
}

// stateParam parses ?state= (default OPEN); ALL is returned as "".
func stateParam(r *http.Request) (domain.State, error) {
	s := r.URL.Query().Get("state")
	switch strings.ToUpper(s) {
	case "":
		return domain.StateOpen, nil
	case "ALL":
		return "", nil
	}
	st, err := domain.ParseState(s)
	if err != nil {
		return "", errorf(http.StatusBadRequest, "state must be OPEN, MERGED, DECLINED or ALL, not %q", s)
	}
	return st, nil
}

// pullRequestPage is one page of the repository's pull request IDs.
func (a *api) pullRequestPage(ctx context.Context, repo domain.Repository, state domain.State, start, limit int) (idPage[int64], error) {
	if state == "" {
		ids, err := a.repoPullRequestIDs(ctx, repo.ID)
		if err != nil {
			return idPage[int64]{}, err
		}
		page, more := window(ids, start, limit)
		return idPage[int64]{IDs: page, More: more}, nil
	}
	bucket := idBucket(repo.ID)
	qkey := prSpaces.queryKey(bucket, "prs:%d:%s?start=%d&limit=%d", repo.ID, state, start, limit)
	return query(ctx, a.regions, qkey, prSpaces.lists[bucket], func(ctx context.Context) (idPage[int64], error) {
		ids, err := a.db.PullRequestIDsByState(ctx, repo.ID, state, start, limit+1)
		return pageOf(ids, limit), err
	})
}

// renderPullRequests loads each pull request through the entity region.
// One that vanished or moved since the list was cached is skipped.
func (a *api) renderPullRequests(ctx context.Context, repo domain.Repository, ids []int64) ([]pullRequestJSON, error) {
	values := make([]pullRequestJSON, 0, len(ids))
	prs, errs := a.pullRequests(ctx, ids)
	for i := range ids {
		pr, err := prs[i], errs[i]
		if errors.Is(err, domain.ErrNotFound) || err == nil && pr.RepositoryID != repo.ID {
			continue
		}
		if err != nil {
			return nil, err
		}
		v, err := a.renderPullRequest(ctx, pr, repo)
		if err != nil {
			return nil, err
		}
		values = append(values, v)
	}
	return values, nil
}

// repoPullRequest loads the pull request {id} of the repository in the
// path, for a caller with at least want on it (PermRead: readers; more:
// writers, with 401/403 answers). A pull request of another repository is
// 404.
func (a *api) repoPullRequest(r *http.Request, p pathParams, want domain.Perm) (domain.Repository, domain.PullRequest, error) {
	ctx := r.Context()
	key, slug, err := pathRepo(p)
	if err != nil {
		return domain.Repository{}, domain.PullRequest{}, err
	}
	id, err := pathID("id", p.id)
	if err != nil {
		return domain.Repository{}, domain.PullRequest{}, err
	}
	var repo domain.Repository
	if want <= domain.PermRead {
		repo, err = a.readableRepo(ctx, r, key, slug)
	} else {
		repo, err = a.requireRepo(ctx, r, key, slug, want)
	}
	if err != nil {
		return domain.Repository{}, domain.PullRequest{}, err
	}
	pr, err := a.pullRequest(ctx, id)
	if err == nil && pr.RepositoryID != repo.ID {
		err = errorf(http.StatusNotFound, "pull request %d does not exist in %s/%s", id, key, slug)
	}
	return repo, pr, err
}

// getPullRequest: GET .../pull-requests/{id}.
func (a *api) getPullRequest(w http.ResponseWriter, r *http.Request, p pathParams) error {
	repo, pr, err := a.repoPullRequest(r, p, domain.PermRead)
	if err != nil {
		return err
	}
	v, err := a.renderPullRequest(r.Context(), pr, repo)
	if err != nil {
		return err
	}
	writeAppended(w, http.StatusOK, v)
	return nil
}

// updatePullRequestBody is PUT .../pull-requests/{id}'s body: the version
// the client read (required) and the fields to change.
type updatePullRequestBody struct {
	Version     *int64  `json:"version"`
	Title       *string `json:"title"`
	Description *string `json:"description"`
	State       *string `json:"state"`
}

func (b updatePullRequestBody) update() (domain.PullRequestUpdate, error) {
	if b.Version == nil || *b.Version < 0 {
		return domain.PullRequestUpdate{}, errorf(http.StatusBadRequest, "version (a non-negative integer) is required")
	}
	u := domain.PullRequestUpdate{Version: *b.Version, Title: b.Title, Description: b.Description}
	if b.State != nil {
		st, err := domain.ParseState(*b.State)
		if err != nil {
			return u, errorf(http.StatusBadRequest, "state must be OPEN, MERGED or DECLINED, not %q", *b.State)
		}
		u.State = &st
	}
	return u, nil
}

// updatePullRequest: PUT .../pull-requests/{id} — needs WRITE; 409 when
// version is not the current one.
func (a *api) updatePullRequest(w http.ResponseWriter, r *http.Request, p pathParams) error {
	if err := a.authenticated(r); err != nil {
		return err
	}
	var body updatePullRequestBody
	if err := a.decode(w, r, &body); err != nil {
		return err
	}
	u, err := body.update()
	if err != nil {
		return err
	}
	repo, pr, err := a.repoPullRequest(r, p, domain.PermWrite)
	if err != nil {
		return err
	}
	updated, err := a.writePullRequest(r.Context(), pr, u)
	if err != nil {
		return err
	}
	v, err := a.renderPullRequest(r.Context(), updated, repo)
	if err != nil {
		return err
	}
	writeAppended(w, http.StatusOK, v)
	return nil
}

// writePullRequest is the read-write strategy around the update: soft
// lock the key everywhere, commit, unlock (which invalidates the key
// everywhere) whatever happened, then bump the pull_requests space for the
// cached lists. The commit, the unlock and the bump run even if the client
// has gone (writeContext), and the bump runs after an error that may hide
// a commit (mayHaveWritten). A lock that fails aborts the update with 503,
// since the stale-put guard could not be set up; an unlock or bump that
// fails after the commit answers 503 too (the update is saved but not
// acknowledged).
func (a *api) writePullRequest(ctx context.Context, pr domain.PullRequest, u domain.PullRequestUpdate) (domain.PullRequest, error) {
	id := pr.ID
	key := idKey(id)
	bg := context.WithoutCancel(ctx)
	if err := a.regions.pullRequests.lock(ctx, key); err != nil {
		a.cfg.Logger.Warn("rest: soft lock failed; update refused", "pull_request", id, "err", err)
		if uerr := a.invalidated(bg, a.regions.pullRequests.unlock(bg, key)); uerr != nil {
			return domain.PullRequest{}, uerr
		}
		return domain.PullRequest{}, errorf(http.StatusServiceUnavailable, "the cache could not lock pull request %d; retry later", id)
	}
	wctx, cancel := writeContext(ctx)
	updated, err := a.db.UpdatePullRequest(wctx, id, u)
	cancel()
	var uerr error
	switch {
	case err == nil:
		// The committed row, kept by the owner and the near holders; and
		// the pull_requests space, marked with the unlock.
		uerr = a.regions.pullRequests.unlockWith(bg, key, updated, prSpaces.buckets[idBucket(updated.RepositoryID)])
	case mayHaveWritten(err):
		// Perhaps committed, its answer lost: the lists may hold the
		// old title or state too.
		uerr = a.regions.pullRequests.unlock(bg, key, prSpaces.buckets[idBucket(pr.RepositoryID)])
	default:
		uerr = a.regions.pullRequests.unlock(bg, key)
	}
	if ierr := a.invalidated(bg, uerr); ierr != nil && err == nil {
		return updated, ierr
	}
	return updated, err
}
