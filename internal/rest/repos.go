package rest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
)

// listRepositories: GET /projects/{key}/repos?start=&limit= — the
// project's repositories the caller may read, by slug. Paging counts all
// repositories, so a page may hold fewer values than limit for a caller
// who cannot read some of them.
func (a *api) listRepositories(w http.ResponseWriter, r *http.Request, p pathParams) error {
	ctx := r.Context()
	key, err := pathKey(p)
	if err != nil {
		return err
	}
	start, limit, err := a.pageParams(r)
	if err != nil {
		return err
	}
	project, err := a.project(ctx, key)
	if err != nil {
		return err
	}
	bucket := keyBucket(project.Key)
	qkey := repoSpaces.queryKey(bucket, "repos:%s?start=%d&limit=%d", key, start, limit)
	page, err := query(ctx, a.regions, qkey, repoSpaces.lists[bucket], func(ctx context.Context) (idPage[string], error) {
		slugs, err := a.db.RepositorySlugs(ctx, key, start, limit+1)
		return pageOf(slugs, limit), err
	})
	if err != nil {
		return err
	}
	values, err := a.readableRepos(ctx, r, project, page.IDs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newPage(values, start, limit, page.More))
	return nil
}

// readableRepos renders the repositories among slugs that the caller reads.
func (a *api) readableRepos(ctx context.Context, r *http.Request, project domain.Project, slugs []string) ([]repositoryJSON, error) {
	all, err := a.projectReadsAll(ctx, r, project.Key)
	if err != nil {
		return nil, err
	}
	values := make([]repositoryJSON, 0, len(slugs))
	var repos []domain.Repository
	var errs []error
	if all {
		repos, errs = a.repositories(ctx, project.Key, slugs)
	}
	for i, slug := range slugs {
		var repo domain.Repository
		if all {
			repo, err = repos[i], errs[i]
		} else {
			repo, err = a.readableRepo(ctx, r, project.Key, slug)
		}
		switch {
		case errors.Is(err, domain.ErrNotFound), isStatus(err, http.StatusNotFound):
			continue // deleted meanwhile, or not for this caller
		case err != nil:
			return nil, err
		}
		values = append(values, renderRepository(repo, project))
	}
	return values, nil
}

func isStatus(err error, status int) bool {
	var he *httpError
	return errors.As(err, &he) && he.status == status
}

// getRepository: GET /projects/{key}/repos/{slug}.
func (a *api) getRepository(w http.ResponseWriter, r *http.Request, p pathParams) error {
	ctx := r.Context()
	key, slug, err := pathRepo(p)
	if err != nil {
		return err
	}
	repo, err := a.readableRepo(ctx, r, key, slug)
	if err != nil {
		return err
	}
	project, err := a.projectOf(ctx, repo)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, renderRepository(repo, project))
	return nil
}

// createRepositoryBody is POST /projects/{key}/repos's body.
type createRepositoryBody struct {
	Name     string `json:"name"`
	Slug     string `json:"slug,omitempty"`
	ScmID    string `json:"scmId,omitempty"`
	Public   bool   `json:"public,omitempty"`
	Forkable *bool  `json:"forkable,omitempty"`
	// DefaultBranch names the branch HEAD points at (Bitbucket's
	// defaultBranch); without it, main until a first push that brings
	// no main makes its first branch the default.
	DefaultBranch string `json:"defaultBranch,omitempty"`
}

// createRepository: POST /projects/{key}/repos — needs ADMIN on the
// project. Answers 201 with the repository.
func (a *api) createRepository(w http.ResponseWriter, r *http.Request, p pathParams) error {
	ctx := r.Context()
	key, err := pathKey(p)
	if err == nil {
		err = a.authenticated(r)
	}
	if err != nil {
		return err
	}
	var body createRepositoryBody
	if err := a.decode(w, r, &body); err != nil {
		return err
	}
	if body.ScmID != "" && body.ScmID != "git" {
		return errorf(http.StatusBadRequest, "scmId must be \"git\", not %q", body.ScmID)
	}
	if body.DefaultBranch != "" && !domain.ValidBranchName(body.DefaultBranch) {
		return errorf(http.StatusBadRequest, "defaultBranch %q is not a branch name", body.DefaultBranch)
	}
	if err := a.requireProject(ctx, r, key, domain.PermAdmin); err != nil {
		return err
	}
	nr := domain.NewRepository{Name: body.Name, Slug: body.Slug, Public: body.Public}
	wctx, cancel := writeContext(ctx)
	repo, err := a.db.CreateRepository(wctx, key, nr)
	cancel()
	if err != nil {
		// The row may be there (its answer lost): a reader may cache it,
		// or the lists with it, from now on.
		if nr.Slug == "" {
			nr.Slug = domain.Slugify(nr.Name)
		}
		return a.afterWrite(ctx, err, func(ctx context.Context) error {
			return a.regions.repositories.evict(ctx, repoKey(key, nr.Slug), repoSpaces.buckets[keyBucket(key)])
		})
	}
	if err := a.afterCreate(ctx, repo, body.DefaultBranch); err != nil {
		return err
	}
	project, err := a.projectOf(ctx, repo)
	if err != nil {
		return err
	}
	w.Header().Set("Location", fmt.Sprintf("%s/projects/%s/repos/%s", Prefix, repo.ProjectKey, repo.Slug))
	writeJSON(w, http.StatusCreated, renderRepository(repo, project))
	return nil
}

// afterCreate runs the creation hook (undoing the row if it fails) and
// then, either way, invalidates what the change touched: the repository's
// key (a reader may have cached the row in between) and the lists.
func (a *api) afterCreate(ctx context.Context, repo domain.Repository, defaultBranch string) (err error) {
	defer func() {
		ctx := context.WithoutCancel(ctx)
		if ierr := a.invalidated(ctx, a.regions.repositories.evict(ctx, repoKey(repo.ProjectKey, repo.Slug), repoSpaces.buckets[keyBucket(repo.ProjectKey)])); err == nil {
			err = ierr
		}
	}()
	if a.cfg.OnRepositoryCreated == nil {
		return nil
	}
	err = a.cfg.OnRepositoryCreated(ctx, repo.ProjectKey, repo.Slug, defaultBranch)
	if err == nil {
		return nil
	}
	a.cfg.Logger.Error("rest: repository hook failed; removing the repository", "project", repo.ProjectKey, "slug", repo.Slug, "err", err)
	if derr := a.db.DeleteRepository(context.WithoutCancel(ctx), repo.ID); derr != nil {
		a.cfg.Logger.Error("rest: removing the repository failed", "id", repo.ID, "err", derr)
	}
	return fmt.Errorf("creating the git repository: %w", err)
}

// writeTimeout bounds a write's database statements once they began
// (writeContext).
const writeTimeout = 30 * time.Second

// writeContext is the context a write's database statements run under:
// the request's, without its cancellation, bounded by writeTimeout. A
// client that gives up mid-commit would otherwise leave the outcome
// unknown to this node too — committed, but answered "context canceled"
// — and with it whether the cache must be told (mayHaveWritten): the
// write is finished, and its invalidation sent, whether the client waits
// for them or not.
func writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

// mayHaveWritten reports whether a database write that returned err may
// have committed. Only the errors the domain gives for a write it refused
// say it did not: invalid input, a missing row, a conflict. Any other — a
// connection that broke, or a deadline that passed, while the commit was
// under way — may hide a commit whose answer was lost, and the write's
// invalidations must run as if it had committed: one too many costs a
// miss, one too few leaves a cached result that never again agrees with
// the database (the chaos checker's "cache differs from the database
// after settling").
func mayHaveWritten(err error) bool {
	return err == nil || !(errors.Is(err, domain.ErrInvalid) || errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrConflict))
}

// afterWrite runs a write's invalidations (invalidate, under ctx without
// its cancellation) if the write, which returned err, may have committed
// (mayHaveWritten), and returns what the client is told: the write's own
// error, or else the invalidation's (invalidated).
func (a *api) afterWrite(ctx context.Context, err error, invalidate func(context.Context) error) error {
	if !mayHaveWritten(err) {
		return err
	}
	bg := context.WithoutCancel(ctx)
	if ierr := a.invalidated(bg, invalidate(bg)); err == nil {
		return ierr
	}
	return err
}

// invalidated logs an invalidation that failed after a committed write
// and returns what the client is told: the write stands, but it may not be
// visible on every node (a member neither acknowledged the invalidation
// nor could be excluded from serving), so it is not acknowledged as done:
// 503, with a message that says the change was saved.
func (a *api) invalidated(_ context.Context, errs ...error) error {
	err := errors.Join(errs...)
	if err == nil {
		return nil
	}
	a.cfg.Logger.Warn("rest: invalidation after a committed write failed", "err", err)
	return errorf(http.StatusServiceUnavailable, "the change was saved, but not every node confirmed it: reads may return the previous state until they do")
}
