package gitfront_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/gitfront"
)

// A node puts the front in front of its own mux: REST and the cluster API
// in the web pool, git under /scm/ in the git pools, health checks
// outside any pool.
func ExampleNew() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/rest/", func(w http.ResponseWriter, r *http.Request) {
		if p, ok := gitfront.PrincipalFrom(r.Context()); ok {
			_ = p.UserID // the authenticated caller
		}
	})
	front, err := gitfront.New(gitfront.Config{
		Web: mux,
		Authenticator: gitfront.AuthenticatorFuncs{
			Basic: func(ctx context.Context, user, secret string) (gitfront.Principal, error) {
				return gitfront.Principal{}, gitfront.ErrBadCredentials // look the user up
			},
		},
		Git: gitfront.GitConfig{
			ReposDir: "/srv/shoal/repos",
			Authorizer: gitfront.AuthorizerFunc(func(ctx context.Context, p gitfront.Principal, project, repo string, a gitfront.Action) error {
				if a == gitfront.ActionRead {
					return nil // everything public, read-only
				}
				return gitfront.ErrForbidden
			}),
			OnPush: func(ctx context.Context, project, repo string) {
				// invalidate the pack cache for gitfront.RepoName(project, repo)
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux.Handle("GET /readyz", front.ReadyHandler(nil))
	srv := &http.Server{Handler: front, ReadHeaderTimeout: 10 * time.Second}
	_ = srv // srv.Serve(listener); on SIGTERM: front.Drain(ctx), then srv.Shutdown(ctx)
}
