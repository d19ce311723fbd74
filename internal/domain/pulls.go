package domain

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

const prColumns = "id, repository_id, title, description, state, from_branch, to_branch, author_id, version, created, updated"

func scanPR(row interface{ Scan(...any) error }) (PullRequest, error) {
	var p PullRequest
	err := row.Scan(&p.ID, &p.RepositoryID, &p.Title, &p.Description, &p.State, &p.FromBranch, &p.ToBranch,
		&p.AuthorID, &p.Version, &p.Created, &p.Updated)
	return p, err
}

// CreatePullRequest opens a pull request at version 0. An unknown
// repository or author is ErrInvalid; bad text is ErrInvalid.
func (s *Store) CreatePullRequest(ctx context.Context, np NewPullRequest) (PullRequest, error) {
	if err := checkNewPR(np); err != nil {
		return PullRequest{}, err
	}
	now := s.now()
	row := s.db.QueryRowContext(ctx, s.q(`INSERT INTO pull_requests
		(repository_id, title, description, state, from_branch, to_branch, author_id, version, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?) RETURNING `+prColumns),
		np.RepositoryID, np.Title, np.Description, StateOpen, np.FromBranch, np.ToBranch, np.AuthorID, now, now)
	p, err := scanPR(row)
	return p, mapErr(err, "domain: create pull request")
}

func checkNewPR(np NewPullRequest) error {
	return firstErr(firstErr(checkText("title", np.Title, true, MaxNameLen), checkText("description", np.Description, false, MaxTextLen)),
		firstErr(checkText("source branch", np.FromBranch, true, MaxNameLen), checkText("target branch", np.ToBranch, true, MaxNameLen)))
}

// PullRequest returns a pull request; ErrNotFound if none.
func (s *Store) PullRequest(ctx context.Context, id int64) (PullRequest, error) {
	p, err := scanPR(s.queryRow(ctx, "SELECT "+prColumns+" FROM pull_requests WHERE id = ?", id))
	return p, mapErr(err, fmt.Sprintf("domain: pull request %d", id))
}

// PullRequestIDs returns the IDs of all of a repository's pull requests,
// newest first: the repository → pull requests collection.
func (s *Store) PullRequestIDs(ctx context.Context, repoID int64) ([]int64, error) {
	return queryList[int64](ctx, s, fmt.Sprintf("domain: pull requests of repository %d", repoID),
		"SELECT id FROM pull_requests WHERE repository_id = ? ORDER BY id DESC", repoID)
}

// PullRequestIDsByState returns up to limit IDs of the repository's pull
// requests in state, newest first, skipping the first start.
func (s *Store) PullRequestIDsByState(ctx context.Context, repoID int64, state State, start, limit int) ([]int64, error) {
	return queryList[int64](ctx, s, fmt.Sprintf("domain: %s pull requests of repository %d", state, repoID),
		"SELECT id FROM pull_requests WHERE repository_id = ? AND state = ? ORDER BY id DESC LIMIT ? OFFSET ?",
		repoID, state, limit, start)
}

// UpdatePullRequest applies u to the pull request if its version is still
// u.Version, incrementing the version, and returns the new state. A stale
// version is ErrConflict, and so is changing the state of a merged pull
// request (merging is final); an unknown ID is ErrNotFound; bad text or
// state is ErrInvalid.
func (s *Store) UpdatePullRequest(ctx context.Context, id int64, u PullRequestUpdate) (PullRequest, error) {
	if err := checkUpdate(u); err != nil {
		return PullRequest{}, err
	}
	var out PullRequest
	err := s.tx(ctx, fmt.Sprintf("domain: update pull request %d", id), func(tx *sql.Tx) error {
		cur, err := scanPR(tx.QueryRowContext(ctx, s.q("SELECT "+prColumns+" FROM pull_requests WHERE id = ?"), id))
		if err != nil {
			return err
		}
		next, err := applyUpdate(cur, u)
		if err != nil {
			return err
		}
		next.Updated = s.now()
		out, err = scanPR(tx.QueryRowContext(ctx, s.q(`UPDATE pull_requests
			SET title = ?, description = ?, state = ?, version = version + 1, updated = ?
			WHERE id = ? AND version = ? RETURNING `+prColumns),
			next.Title, next.Description, next.State, next.Updated, id, u.Version))
		if err == sql.ErrNoRows {
			return fmt.Errorf("%w: pull request %d changed concurrently", ErrConflict, id)
		}
		return err
	})
	return out, err
}

func checkUpdate(u PullRequestUpdate) error {
	if u.Title != nil {
		if err := checkText("title", *u.Title, true, MaxNameLen); err != nil {
			return err
		}
	}
	if u.Description != nil {
		if err := checkText("description", *u.Description, false, MaxTextLen); err != nil {
			return err
		}
	}
	if u.State != nil {
		if _, err := ParseState(string(*u.State)); err != nil {
			return err
		}
	}
	return nil
}

// applyUpdate is cur with u applied, or why it cannot be.
func applyUpdate(cur PullRequest, u PullRequestUpdate) (PullRequest, error) {
	if cur.Version != u.Version {
		return cur, fmt.Errorf("%w: pull request %d is at version %d, not %d", ErrConflict, cur.ID, cur.Version, u.Version)
	}
	next := cur
	if u.Title != nil {
		next.Title = *u.Title
	}
	if u.Description != nil {
		next.Description = *u.Description
	}
	if u.State != nil {
		next.State = *u.State
	}
	if cur.State == StateMerged && next.State != StateMerged {
		return cur, fmt.Errorf("%w: pull request %d is merged; its state cannot change", ErrConflict, cur.ID)
	}
	return next, nil
}

// OpenPullRequestsFrom returns the IDs of the repository's OPEN pull
// requests whose source branch is one of branches (short names such as
// "feature/x"), in ID order.
func (s *Store) OpenPullRequestsFrom(ctx context.Context, repoID int64, branches []string) ([]int64, error) {
	if len(branches) == 0 {
		return nil, nil
	}
	args := []any{repoID, StateOpen}
	for _, b := range branches {
		args = append(args, b)
	}
	return queryList[int64](ctx, s, fmt.Sprintf("domain: open pull requests of repository %d by source branch", repoID),
		"SELECT id FROM pull_requests WHERE repository_id = ? AND state = ? AND from_branch IN ("+
			placeholders(len(branches))+") ORDER BY id", args...)
}

// SourceMoved records that the source branch of these pull requests
// moved (a push): each that is still OPEN gets a new version and its
// updated time set to now, so that an edit based on what was read before
// the push is refused as stale. It returns the IDs it changed.
func (s *Store) SourceMoved(ctx context.Context, ids []int64) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := []any{s.now(), StateOpen}
	for _, id := range ids {
		args = append(args, id)
	}
	return queryList[int64](ctx, s, "domain: source branch moved",
		"UPDATE pull_requests SET version = version + 1, updated = ? WHERE state = ? AND id IN ("+
			placeholders(len(ids))+") RETURNING id", args...)
}

// placeholders is n comma-separated "?".
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}
