package domain

import (
	"context"
	"fmt"
)

const commentColumns = "id, pull_request_id, author_id, text, created"

func scanComment(row interface{ Scan(...any) error }) (Comment, error) {
	var c Comment
	err := row.Scan(&c.ID, &c.PullRequestID, &c.AuthorID, &c.Text, &c.Created)
	return c, err
}

// CreateComment adds a comment to a pull request. An unknown pull request
// is ErrNotFound, an unknown author or bad text ErrInvalid.
func (s *Store) CreateComment(ctx context.Context, prID, authorID int64, text string) (Comment, error) {
	if err := checkText("text", text, true, MaxTextLen); err != nil {
		return Comment{}, err
	}
	row := s.db.QueryRowContext(ctx, s.q(`INSERT INTO comments (pull_request_id, author_id, text, created)
		SELECT id, ?, ?, ? FROM pull_requests WHERE id = ? RETURNING `+commentColumns), authorID, text, s.now(), prID)
	c, err := scanComment(row)
	return c, mapErr(err, fmt.Sprintf("domain: comment on pull request %d", prID))
}

// Comments returns up to limit comments of a pull request, oldest first,
// skipping the first start.
func (s *Store) Comments(ctx context.Context, prID int64, start, limit int) ([]Comment, error) {
	what := fmt.Sprintf("domain: comments of pull request %d", prID)
	rows, err := s.db.QueryContext(ctx, s.q("SELECT "+commentColumns+
		" FROM comments WHERE pull_request_id = ? ORDER BY id LIMIT ? OFFSET ?"), prID, limit, start)
	if err != nil {
		return nil, mapErr(err, what)
	}
	defer rows.Close()
	out := []Comment{}
	for rows.Next() {
		c, err := scanComment(rows)
		if err != nil {
			return nil, mapErr(err, what)
		}
		out = append(out, c)
	}
	return out, mapErr(rows.Err(), what)
}
