package domain

import (
	"fmt"
	"strings"
)

// User is an account. The password hash never leaves the package.
type User struct {
	ID          int64  `msgpack:"id"`
	Name        string `msgpack:"n"`
	DisplayName string `msgpack:"d"`
	Email       string `msgpack:"e"`
	Admin       bool   `msgpack:"a"`
	Created     int64  `msgpack:"c"` // Unix ms
}

// NewUser is what CreateUser needs. An empty Password makes an account
// that can only authenticate with access tokens.
type NewUser struct {
	Name, DisplayName, Email, Password string
	Admin                              bool
}

// Project groups repositories under a key ("PROJ").
type Project struct {
	ID          int64  `msgpack:"id"`
	Key         string `msgpack:"k"`
	Name        string `msgpack:"n"`
	Description string `msgpack:"d"`
	Created     int64  `msgpack:"c"`
}

// Repository is a git repository in a project, named by its slug.
type Repository struct {
	ID           int64  `msgpack:"id"`
	ProjectID    int64  `msgpack:"p"`
	ProjectKey   string `msgpack:"pk"`
	Slug         string `msgpack:"s"`
	Name         string `msgpack:"n"`
	Public       bool   `msgpack:"pub"`
	Created      int64  `msgpack:"c"`
	LastModified int64  `msgpack:"m"`
}

// NewRepository is what CreateRepository needs; an empty Slug is derived
// from Name.
type NewRepository struct {
	Name, Slug string
	Public     bool
}

// State is a pull request's state.
type State string

// Pull request states.
const (
	StateOpen     State = "OPEN"
	StateMerged   State = "MERGED"
	StateDeclined State = "DECLINED"
)

// ParseState accepts a state in any case.
func ParseState(s string) (State, error) {
	switch st := State(strings.ToUpper(s)); st {
	case StateOpen, StateMerged, StateDeclined:
		return st, nil
	}
	return "", fmt.Errorf("%w: state %q is not OPEN, MERGED or DECLINED", ErrInvalid, s)
}

// PullRequest proposes merging FromBranch into ToBranch. Version counts
// its updates, for optimistic locking.
type PullRequest struct {
	ID           int64  `msgpack:"id"`
	RepositoryID int64  `msgpack:"r"`
	Title        string `msgpack:"t"`
	Description  string `msgpack:"d"`
	State        State  `msgpack:"s"`
	FromBranch   string `msgpack:"f"`
	ToBranch     string `msgpack:"to"`
	AuthorID     int64  `msgpack:"a"`
	Version      int64  `msgpack:"v"`
	Created      int64  `msgpack:"c"`
	Updated      int64  `msgpack:"u"`
}

// NewPullRequest is what CreatePullRequest needs.
type NewPullRequest struct {
	RepositoryID         int64
	Title, Description   string
	FromBranch, ToBranch string
	AuthorID             int64
}

// PullRequestUpdate changes a pull request read at Version; nil fields
// stay as they are.
type PullRequestUpdate struct {
	Version     int64
	Title       *string
	Description *string
	State       *State
}

// Comment is a remark on a pull request.
type Comment struct {
	ID            int64  `msgpack:"id"`
	PullRequestID int64  `msgpack:"pr"`
	AuthorID      int64  `msgpack:"a"`
	Text          string `msgpack:"t"`
	Created       int64  `msgpack:"c"`
}

// Perm is a permission level; higher includes lower.
type Perm int

// Permission levels.
const (
	PermNone  Perm = 0
	PermRead  Perm = 1
	PermWrite Perm = 2
	PermAdmin Perm = 3
)

func (p Perm) String() string {
	return [...]string{"NONE", "READ", "WRITE", "ADMIN"}[max(0, min(int(p), 3))]
}

// ParsePerm accepts READ, WRITE, ADMIN or NONE in any case.
func ParsePerm(s string) (Perm, error) {
	switch strings.ToUpper(s) {
	case "READ":
		return PermRead, nil
	case "WRITE":
		return PermWrite, nil
	case "ADMIN":
		return PermAdmin, nil
	case "NONE":
		return PermNone, nil
	}
	return PermNone, fmt.Errorf("%w: permission %q is not READ, WRITE, ADMIN or NONE", ErrInvalid, s)
}

// Limits on text fields.
const (
	MaxNameLen = 255
	MaxTextLen = 32 << 10
)
