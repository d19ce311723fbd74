package rest

import (
	"context"
	"net/http"

	"github.com/shoal-dev/shoal/internal/domain"
)

// caller is the authenticated user's ID, 0 for anonymous.
func (a *api) caller(r *http.Request) int64 {
	if id, ok := a.cfg.Principal(r); ok {
		return id
	}
	return 0
}

// authenticated is 401 for an anonymous caller: writes check it before
// reading the body.
func (a *api) authenticated(r *http.Request) error {
	if a.caller(r) == 0 {
		return errorf(http.StatusUnauthorized, "authentication required")
	}
	return nil
}

// readableRepo returns the repository if the caller may read it. A
// repository the caller may not read is ErrNotFound, as if it did not
// exist. Public repositories are decided from the cached entity alone;
// private ones by the caller's permission, which the database decides
// and the node reuses for Config.PermissionTTL.
func (a *api) readableRepo(ctx context.Context, r *http.Request, key, slug string) (domain.Repository, error) {
	repo, err := a.repository(ctx, key, slug)
	if err != nil || repo.Public {
		return repo, err
	}
	uid := a.caller(r)
	perm, ok := a.perms.get(uid, repo.ID)
	if !ok {
		if perm, err = a.db.Permission(ctx, uid, key, slug); err != nil {
			return domain.Repository{}, err
		}
		a.perms.put(uid, repo.ID, perm)
	}
	if perm < domain.PermRead {
		return domain.Repository{}, errorf(http.StatusNotFound, "repository %s/%s does not exist", key, slug)
	}
	return repo, nil
}

// requireRepo returns the repository if the caller has at least want on
// it: 401 for an anonymous caller, 404 without READ, 403 with READ but
// less than want.
func (a *api) requireRepo(ctx context.Context, r *http.Request, key, slug string, want domain.Perm) (domain.Repository, error) {
	uid := a.caller(r)
	if uid == 0 {
		return domain.Repository{}, errorf(http.StatusUnauthorized, "authentication required")
	}
	repo, err := a.repository(ctx, key, slug)
	if err != nil {
		return domain.Repository{}, err
	}
	perm, err := a.db.Permission(ctx, uid, key, slug)
	if err != nil {
		return domain.Repository{}, err
	}
	return repo, permissionError(perm, want, "repository "+key+"/"+slug, true)
}

// requireProject checks the caller's permission on a project: 401 for an
// anonymous caller, 404 for an unknown project, 403 without want
// (projects are visible to everyone, so nothing is hidden).
func (a *api) requireProject(ctx context.Context, r *http.Request, key string, want domain.Perm) error {
	uid := a.caller(r)
	if uid == 0 {
		return errorf(http.StatusUnauthorized, "authentication required")
	}
	perm, err := a.db.Permission(ctx, uid, key, "")
	if err != nil {
		return err
	}
	return permissionError(perm, want, "project "+key, false)
}

// permissionError is nil if have suffices for want; otherwise 404 when
// the caller may not even learn that the thing exists (hide and no READ),
// else 403.
func permissionError(have, want domain.Perm, what string, hide bool) error {
	switch {
	case have >= want:
		return nil
	case hide && have < domain.PermRead:
		return errorf(http.StatusNotFound, "%s does not exist", what)
	}
	return errorf(http.StatusForbidden, "%v permission on %s is required", want, what)
}

// projectReadsAll reports whether the caller reads every repository of
// the project (a project permission or a global admin), so listings need
// no per-repository check.
func (a *api) projectReadsAll(ctx context.Context, r *http.Request, key string) (bool, error) {
	uid := a.caller(r)
	if uid == 0 {
		return false, nil
	}
	perm, err := a.db.Permission(ctx, uid, key, "")
	return perm >= domain.PermRead, err
}
