package domain

import (
	"context"
	"database/sql"
	"fmt"
)

// Permission is the effective permission of a user (0: anonymous) on a
// repository, or on a project when repoSlug is "". It is the highest of:
// ADMIN for an admin user; the user's project permission (which applies
// to every repository of the project); the user's repository permission;
// READ for anyone on a public repository. An unknown project or repository
// is ErrNotFound.
func (s *Store) Permission(ctx context.Context, userID int64, projectKey, repoSlug string) (Perm, error) {
	if repoSlug == "" {
		return s.projectPermission(ctx, userID, projectKey)
	}
	var public, admin bool
	var projPerm, repoPerm Perm
	err := s.queryRow(ctx, `SELECT r.public,
		COALESCE((SELECT perm FROM project_permissions WHERE project_id = p.id AND user_id = ?), 0),
		COALESCE((SELECT perm FROM repository_permissions WHERE repository_id = r.id AND user_id = ?), 0),
		COALESCE((SELECT admin FROM users WHERE id = ?), FALSE)
		FROM projects p JOIN repositories r ON r.project_id = p.id
		WHERE p.project_key = ? AND r.slug = ?`, userID, userID, userID, projectKey, repoSlug).
		Scan(&public, &projPerm, &repoPerm, &admin)
	if err != nil {
		return PermNone, mapErr(err, fmt.Sprintf("domain: permission on %s/%s", projectKey, repoSlug))
	}
	p := max(projPerm, repoPerm)
	if public {
		p = max(p, PermRead)
	}
	if admin {
		p = PermAdmin
	}
	return p, nil
}

func (s *Store) projectPermission(ctx context.Context, userID int64, projectKey string) (Perm, error) {
	var admin bool
	var p Perm
	err := s.queryRow(ctx, `SELECT
		COALESCE((SELECT perm FROM project_permissions WHERE project_id = p.id AND user_id = ?), 0),
		COALESCE((SELECT admin FROM users WHERE id = ?), FALSE)
		FROM projects p WHERE p.project_key = ?`, userID, userID, projectKey).Scan(&p, &admin)
	if err != nil {
		return PermNone, mapErr(err, fmt.Sprintf("domain: permission on project %s", projectKey))
	}
	if admin {
		p = PermAdmin
	}
	return p, nil
}

// Grant sets a user's permission on a repository, or on a project when
// repoSlug is "". PermNone removes it. Unknown user, project or repository
// is ErrNotFound (or ErrInvalid for the user).
func (s *Store) Grant(ctx context.Context, userID int64, projectKey, repoSlug string, p Perm) error {
	if p < PermNone || p > PermAdmin {
		return fmt.Errorf("%w: permission %d", ErrInvalid, p)
	}
	what := fmt.Sprintf("domain: grant %v on %s/%s to user %d", p, projectKey, repoSlug, userID)
	return s.tx(ctx, what, func(tx *sql.Tx) error {
		table, col, id, err := s.grantTarget(ctx, tx, projectKey, repoSlug)
		if err != nil {
			return err
		}
		if p == PermNone {
			_, err = tx.ExecContext(ctx, s.q("DELETE FROM "+table+" WHERE "+col+" = ? AND user_id = ?"), id, userID)
			return err
		}
		_, err = tx.ExecContext(ctx, s.q("INSERT INTO "+table+" ("+col+", user_id, perm) VALUES (?, ?, ?) "+
			"ON CONFLICT ("+col+", user_id) DO UPDATE SET perm = excluded.perm"), id, userID, p)
		return err
	})
}

// grantTarget is the permission table, its key column and the row's id.
func (s *Store) grantTarget(ctx context.Context, tx *sql.Tx, projectKey, repoSlug string) (string, string, int64, error) {
	var id int64
	if repoSlug == "" {
		err := tx.QueryRowContext(ctx, s.q("SELECT id FROM projects WHERE project_key = ?"), projectKey).Scan(&id)
		return "project_permissions", "project_id", id, err
	}
	err := tx.QueryRowContext(ctx, s.q(`SELECT r.id FROM repositories r JOIN projects p ON p.id = r.project_id
		WHERE p.project_key = ? AND r.slug = ?`), projectKey, repoSlug).Scan(&id)
	return "repository_permissions", "repository_id", id, err
}
