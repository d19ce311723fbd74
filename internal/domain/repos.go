package domain

import (
	"context"
	"database/sql"
	"fmt"
)

const repoColumns = "r.id, r.project_id, p.project_key, r.slug, r.name, r.public, r.created, r.last_modified"

func scanRepo(row interface{ Scan(...any) error }) (Repository, error) {
	var r Repository
	err := row.Scan(&r.ID, &r.ProjectID, &r.ProjectKey, &r.Slug, &r.Name, &r.Public, &r.Created, &r.LastModified)
	return r, err
}

// CreateRepository adds a repository to the project with this key. The
// slug defaults to Slugify(Name). An unknown project is ErrNotFound, a
// taken slug ErrConflict, a bad name or slug ErrInvalid.
func (s *Store) CreateRepository(ctx context.Context, projectKey string, nr NewRepository) (Repository, error) {
	if nr.Slug == "" {
		nr.Slug = Slugify(nr.Name)
	}
	if err := checkText("name", nr.Name, true, MaxNameLen); err != nil {
		return Repository{}, err
	}
	if !ValidSlug(nr.Slug) {
		return Repository{}, fmt.Errorf("%w: repository slug %q", ErrInvalid, nr.Slug)
	}
	var id int64
	err := s.tx(ctx, "domain: create repository "+projectKey+"/"+nr.Slug, func(tx *sql.Tx) error {
		var projectID int64
		if err := tx.QueryRowContext(ctx, s.q("SELECT id FROM projects WHERE project_key = ?"), projectKey).Scan(&projectID); err != nil {
			return err
		}
		now := s.now()
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO repositories (project_id, slug, name, public, created, last_modified)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`), projectID, nr.Slug, nr.Name, nr.Public, now, now).Scan(&id)
	})
	if err != nil {
		return Repository{}, err
	}
	return s.RepositoryByID(ctx, id)
}

// Repository returns the repository projectKey/slug; ErrNotFound if none.
func (s *Store) Repository(ctx context.Context, projectKey, slug string) (Repository, error) {
	r, err := scanRepo(s.queryRow(ctx, "SELECT "+repoColumns+
		" FROM repositories r JOIN projects p ON p.id = r.project_id WHERE p.project_key = ? AND r.slug = ?", projectKey, slug))
	return r, mapErr(err, fmt.Sprintf("domain: repository %s/%s", projectKey, slug))
}

// RepositoryByID returns a repository; ErrNotFound if none.
func (s *Store) RepositoryByID(ctx context.Context, id int64) (Repository, error) {
	r, err := scanRepo(s.db.QueryRowContext(ctx, s.q("SELECT "+repoColumns+
		" FROM repositories r JOIN projects p ON p.id = r.project_id WHERE r.id = ?"), id))
	return r, mapErr(err, fmt.Sprintf("domain: repository %d", id))
}

// RepositorySlugs returns up to limit slugs of the project's repositories
// in slug order, skipping the first start. An unknown project gives an
// empty list.
func (s *Store) RepositorySlugs(ctx context.Context, projectKey string, start, limit int) ([]string, error) {
	return queryList[string](ctx, s, "domain: list repositories of "+projectKey,
		`SELECT r.slug FROM repositories r JOIN projects p ON p.id = r.project_id
		WHERE p.project_key = ? ORDER BY r.slug LIMIT ? OFFSET ?`, projectKey, limit, start)
}

// DeleteRepository removes a repository with its pull requests, comments
// and permissions; ErrNotFound if none.
func (s *Store) DeleteRepository(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, s.q("DELETE FROM repositories WHERE id = ?"), id)
	return mapErr(oneRow(res, err), fmt.Sprintf("domain: delete repository %d", id))
}

// TouchRepository sets a repository's last-modified time to now (after a
// push); ErrNotFound if none.
func (s *Store) TouchRepository(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, s.q("UPDATE repositories SET last_modified = ? WHERE id = ?"), s.now(), id)
	return mapErr(oneRow(res, err), fmt.Sprintf("domain: touch repository %d", id))
}
