package server

import (
	"net/http"

	"github.com/shoal-dev/shoal/scheduler"
)

// JobsHandler serves /v1/jobs for the node's scheduler (see
// scheduler.Handler for the routes and answers).
func JobsHandler(s *scheduler.Scheduler) http.Handler { return scheduler.Handler(s) }

// jobRoutes mounts JobsHandler on mux: /v1/jobs and everything under it.
func jobRoutes(mux *http.ServeMux, s *scheduler.Scheduler) {
	h := JobsHandler(s)
	mux.Handle("/v1/jobs", h)
	mux.Handle("/v1/jobs/", h)
}
