package rest

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/shoal-dev/shoal/internal/domain"
)

// The JSON shapes, after Bitbucket Data Center's REST API.

type projectJSON struct {
	Key         string `json:"key"`
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Public      bool   `json:"public"`
	Type        string `json:"type"`
}

func renderProject(p domain.Project) projectJSON {
	return projectJSON{Key: p.Key, ID: p.ID, Name: p.Name, Description: p.Description, Type: "NORMAL"}
}

type repositoryJSON struct {
	Slug             string      `json:"slug"`
	ID               int64       `json:"id"`
	Name             string      `json:"name"`
	ScmID            string      `json:"scmId"`
	State            string      `json:"state"`
	Forkable         bool        `json:"forkable"`
	Public           bool        `json:"public"`
	Project          projectJSON `json:"project"`
	CreatedDate      int64       `json:"createdDate"`
	LastModifiedDate int64       `json:"lastModifiedDate"`
}

func renderRepository(r domain.Repository, p domain.Project) repositoryJSON {
	return repositoryJSON{Slug: r.Slug, ID: r.ID, Name: r.Name, ScmID: "git", State: "AVAILABLE", Forkable: true,
		Public: r.Public, Project: renderProject(p), CreatedDate: r.Created, LastModifiedDate: r.LastModified}
}

type userJSON struct {
	Name         string `json:"name"`
	EmailAddress string `json:"emailAddress"`
	ID           int64  `json:"id"`
	DisplayName  string `json:"displayName"`
	Active       bool   `json:"active"`
	Slug         string `json:"slug"`
	Type         string `json:"type"`
}

func renderUser(u domain.User) userJSON {
	return userJSON{Name: u.Name, EmailAddress: u.Email, ID: u.ID, DisplayName: u.DisplayName, Active: true, Slug: u.Name, Type: "NORMAL"}
}

type refRepoJSON struct {
	Slug    string `json:"slug"`
	Project struct {
		Key string `json:"key"`
	} `json:"project"`
}

// refJSON is a branch of a repository. Its "id" is "refs/heads/" and the
// branch, written out when encoded rather than built as a string for
// every pull request rendered.
type refJSON struct {
	DisplayID  string
	Repository refRepoJSON
}

// MarshalJSON is for encoding/json's paths (appendJSON is the fast one).
// It leaves HTML escaping to the calling encoder, which applies its own
// setting to a Marshaler's output.
func (r refJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		ID         string      `json:"id"`
		DisplayID  string      `json:"displayId"`
		Repository refRepoJSON `json:"repository"`
	}{"refs/heads/" + r.DisplayID, r.DisplayID, r.Repository})
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), err
}

type participantJSON struct {
	User userJSON `json:"user"`
	Role string   `json:"role"`
}

type pullRequestJSON struct {
	ID          int64           `json:"id"`
	Version     int64           `json:"version"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	State       domain.State    `json:"state"`
	Open        bool            `json:"open"`
	Closed      bool            `json:"closed"`
	CreatedDate int64           `json:"createdDate"`
	UpdatedDate int64           `json:"updatedDate"`
	FromRef     refJSON         `json:"fromRef"`
	ToRef       refJSON         `json:"toRef"`
	Author      participantJSON `json:"author"`
}

func ref(branch string, repo domain.Repository) refJSON {
	r := refJSON{DisplayID: branch}
	r.Repository.Slug = repo.Slug
	r.Repository.Project.Key = repo.ProjectKey
	return r
}

// renderPullRequest needs the author, through the users region.
func (a *api) renderPullRequest(ctx context.Context, pr domain.PullRequest, repo domain.Repository) (pullRequestJSON, error) {
	author, err := a.user(ctx, pr.AuthorID)
	if err != nil {
		return pullRequestJSON{}, err
	}
	return pullRequestJSON{ID: pr.ID, Version: pr.Version, Title: pr.Title, Description: pr.Description, State: pr.State,
		Open: pr.State == domain.StateOpen, Closed: pr.State != domain.StateOpen, CreatedDate: pr.Created, UpdatedDate: pr.Updated,
		FromRef: ref(pr.FromBranch, repo), ToRef: ref(pr.ToBranch, repo),
		Author: participantJSON{User: renderUser(author), Role: "AUTHOR"}}, nil
}

type commentJSON struct {
	ID          int64    `json:"id"`
	Version     int64    `json:"version"`
	Text        string   `json:"text"`
	Author      userJSON `json:"author"`
	CreatedDate int64    `json:"createdDate"`
	UpdatedDate int64    `json:"updatedDate"`
}

func (a *api) renderComment(ctx context.Context, c domain.Comment) (commentJSON, error) {
	author, err := a.user(ctx, c.AuthorID)
	if err != nil {
		return commentJSON{}, err
	}
	return commentJSON{ID: c.ID, Text: c.Text, Author: renderUser(author), CreatedDate: c.Created, UpdatedDate: c.Created}, nil
}
