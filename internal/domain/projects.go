package domain

import (
	"context"
	"fmt"
)

const projectColumns = "id, project_key, name, description, created"

func scanProject(row interface{ Scan(...any) error }) (Project, error) {
	var p Project
	err := row.Scan(&p.ID, &p.Key, &p.Name, &p.Description, &p.Created)
	return p, err
}

// CreateProject adds a project. A taken key is ErrConflict; a bad key or
// name is ErrInvalid.
func (s *Store) CreateProject(ctx context.Context, p Project) (Project, error) {
	if !ValidProjectKey(p.Key) {
		return Project{}, fmt.Errorf("%w: project key %q", ErrInvalid, p.Key)
	}
	if err := firstErr(checkText("name", p.Name, true, MaxNameLen), checkText("description", p.Description, false, MaxTextLen)); err != nil {
		return Project{}, err
	}
	row := s.db.QueryRowContext(ctx, s.q("INSERT INTO projects (project_key, name, description, created) VALUES (?, ?, ?, ?) RETURNING "+projectColumns),
		p.Key, p.Name, p.Description, s.now())
	out, err := scanProject(row)
	return out, mapErr(err, "domain: create project "+p.Key)
}

// Project returns the project with this key; ErrNotFound if none.
func (s *Store) Project(ctx context.Context, key string) (Project, error) {
	p, err := scanProject(s.queryRow(ctx, "SELECT "+projectColumns+" FROM projects WHERE project_key = ?", key))
	return p, mapErr(err, "domain: project "+key)
}

// ProjectKeys returns up to limit project keys in key order, skipping the
// first start.
func (s *Store) ProjectKeys(ctx context.Context, start, limit int) ([]string, error) {
	return queryList[string](ctx, s, "domain: list projects",
		"SELECT project_key FROM projects ORDER BY project_key LIMIT ? OFFSET ?", limit, start)
}

// queryList runs a one-column query and collects the values.
func queryList[T any](ctx context.Context, s *Store, what, query string, args ...any) ([]T, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, mapErr(err, what)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, mapErr(err, what)
		}
		out = append(out, v)
	}
	return out, mapErr(rows.Err(), what)
}
