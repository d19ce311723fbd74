package rest

import (
	"context"
	"net/http"

	"github.com/shoal-dev/shoal/internal/domain"
)

// listComments: GET .../pull-requests/{id}/comments?start=&limit= —
// oldest first. Pages are cached in the query region over the comments
// space (comments are immutable, so the page holds them whole).
func (a *api) listComments(w http.ResponseWriter, r *http.Request, p pathParams) error {
	start, limit, err := a.pageParams(r)
	if err != nil {
		return err
	}
	_, pr, err := a.repoPullRequest(r, p, domain.PermRead)
	if err != nil {
		return err
	}
	ctx := r.Context()
	bucket := idBucket(pr.ID)
	qkey := commentSpaces.queryKey(bucket, "comments:%d?start=%d&limit=%d", pr.ID, start, limit)
	page, err := query(ctx, a.regions, qkey, commentSpaces.lists[bucket], func(ctx context.Context) (idPage[domain.Comment], error) {
		cs, err := a.db.Comments(ctx, pr.ID, start, limit+1)
		return pageOf(cs, limit), err
	})
	if err != nil {
		return err
	}
	values := make([]commentJSON, 0, len(page.IDs))
	for _, c := range page.IDs {
		v, err := a.renderComment(ctx, c)
		if err != nil {
			return err
		}
		values = append(values, v)
	}
	writeJSON(w, http.StatusOK, newPage(values, start, limit, page.More))
	return nil
}

// createCommentBody is POST .../comments's body.
type createCommentBody struct {
	Text string `json:"text"`
}

// createComment: POST .../pull-requests/{id}/comments — needs WRITE.
// Answers 201 with the comment.
func (a *api) createComment(w http.ResponseWriter, r *http.Request, p pathParams) error {
	if err := a.authenticated(r); err != nil {
		return err
	}
	var body createCommentBody
	if err := a.decode(w, r, &body); err != nil {
		return err
	}
	_, pr, err := a.repoPullRequest(r, p, domain.PermWrite)
	if err != nil {
		return err
	}
	ctx := r.Context()
	wctx, cancel := writeContext(ctx)
	defer cancel()
	c, err := a.db.CreateComment(wctx, pr.ID, a.caller(r), body.Text)
	// Marked even when the answer was an error that may hide the commit:
	// a list cached before would otherwise stay as it was.
	err = a.afterWrite(ctx, err, func(ctx context.Context) error {
		return a.regions.updateSpaces(ctx, commentSpaces.buckets[idBucket(pr.ID)])
	})
	if err != nil {
		return err
	}
	v, err := a.renderComment(ctx, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}
