package rest

import (
	"context"
	"fmt"
	"net/http"

	"github.com/shoal-dev/shoal/internal/domain"
)

// listProjects: GET /projects?start=&limit= — every project, by key.
func (a *api) listProjects(w http.ResponseWriter, r *http.Request, _ pathParams) error {
	start, limit, err := a.pageParams(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	key := fmt.Sprintf("projects?start=%d&limit=%d", start, limit)
	page, err := query(ctx, a.regions, key, []string{spaceProjects}, func(ctx context.Context) (idPage[string], error) {
		keys, err := a.db.ProjectKeys(ctx, start, limit+1)
		return pageOf(keys, limit), err
	})
	if err != nil {
		return err
	}
	values := make([]projectJSON, 0, len(page.IDs))
	for _, k := range page.IDs {
		p, err := a.project(ctx, k)
		if err != nil {
			return err
		}
		values = append(values, renderProject(p))
	}
	writeJSON(w, http.StatusOK, newPage(values, start, limit, page.More))
	return nil
}

// pageOf turns the limit+1 rows a list query fetched into a page.
func pageOf[T any](rows []T, limit int) idPage[T] {
	if len(rows) > limit {
		return idPage[T]{IDs: rows[:limit], More: true}
	}
	return idPage[T]{IDs: rows}
}

// getProject: GET /projects/{key}.
func (a *api) getProject(w http.ResponseWriter, r *http.Request, p pathParams) error {
	key, err := pathKey(p)
	if err != nil {
		return err
	}
	project, err := a.project(r.Context(), key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, renderProject(project))
	return nil
}

// projectOf loads the repository's project for rendering.
func (a *api) projectOf(ctx context.Context, repo domain.Repository) (domain.Project, error) {
	return a.project(ctx, repo.ProjectKey)
}

// createProjectBody is POST /projects's body, as Bitbucket takes it.
type createProjectBody struct {
	Key         string `json:"key"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// createProject: POST /projects — administrators only (Bitbucket's
// PROJECT_CREATE, which shoal has no separate permission for). Answers
// 201 with the project and its Location; a taken key is 409.
func (a *api) createProject(w http.ResponseWriter, r *http.Request, _ pathParams) error {
	ctx := r.Context()
	if err := a.authenticated(r); err != nil {
		return err
	}
	var body createProjectBody
	if err := a.decode(w, r, &body); err != nil {
		return err
	}
	u, err := a.db.UserByID(ctx, a.caller(r))
	if err != nil {
		return err
	}
	if !u.Admin {
		return errorf(http.StatusForbidden, "only administrators may create projects")
	}
	if !domain.ValidProjectKey(body.Key) {
		return errorf(http.StatusBadRequest, "project key %q: want a letter, then up to 127 letters, digits or underscores", body.Key)
	}
	wctx, cancel := writeContext(ctx)
	defer cancel()
	p, err := a.db.CreateProject(wctx, domain.Project{Key: body.Key, Name: body.Name, Description: body.Description})
	// A reader may have cached the key's absence in a list: every project
	// list is a query over the projects table. Told even when the answer
	// was an error that may hide the commit.
	err = a.afterWrite(ctx, err, func(ctx context.Context) error { return a.regions.projects.evict(ctx, body.Key, spaceProjects) })
	if err != nil {
		return err
	}
	w.Header().Set("Location", fmt.Sprintf("%s/projects/%s", Prefix, p.Key))
	writeJSON(w, http.StatusCreated, renderProject(p))
	return nil
}
