package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/httperr"
)

// Handler serves the operators' API under /v1/jobs, on any node:
//
//	GET    /v1/jobs               list the jobs ([]Status); ?stale=true: this
//	                              node's copies, without the store (Snapshot)
//	GET    /v1/jobs/{id}          one job (Status)
//	PUT    /v1/jobs/{id}          schedule a job (a Job in JSON; the ID is the path's)
//	POST   /v1/jobs/{id}/run-now  run once as soon as possible
//	POST   /v1/jobs/{id}/pause    stop scheduled runs
//	POST   /v1/jobs/{id}/resume   restart them
//	DELETE /v1/jobs/{id}          remove the job
//
// A job scheduled through PUT must name a runner that this node or a live
// member has registered, and fire at most once per Config.APIMinInterval
// (400 otherwise).
//
// Changes answer with the job's Status afterwards (DELETE with
// {"deleted": id}). Errors answer {"errors":[{"message": text}]} with 404 (no such job),
// 400 (invalid), 409 (no runner, concurrent changes), 503 (no leader,
// closed) or 504 (outcome unknown).
func Handler(s *Scheduler) http.Handler {
	mux := http.NewServeMux()
	h := handler{s}
	mux.HandleFunc("GET /v1/jobs", h.list)
	mux.HandleFunc("GET /v1/jobs/{id}", h.get)
	mux.HandleFunc("PUT /v1/jobs/{id}", h.put)
	mux.HandleFunc("DELETE /v1/jobs/{id}", h.delete)
	mux.HandleFunc("POST /v1/jobs/{id}/run-now", h.action(s.RunNow))
	mux.HandleFunc("POST /v1/jobs/{id}/pause", h.action(s.Pause))
	mux.HandleFunc("POST /v1/jobs/{id}/resume", h.action(s.Resume))
	mux.HandleFunc("/", httperr.NoRoute(mux))
	return mux
}

type handler struct{ s *Scheduler }

// requestTimeout bounds the store calls of one API request.
const requestTimeout = 10 * time.Second

func reqContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), requestTimeout)
}

func (h handler) list(w http.ResponseWriter, r *http.Request) {
	if stale, err := strconv.ParseBool(r.URL.Query().Get("stale")); err == nil && stale {
		writeJSON(w, http.StatusOK, h.s.Snapshot())
		return
	}
	ctx, cancel := reqContext(r)
	defer cancel()
	jobs, err := h.s.Jobs(ctx)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if jobs == nil {
		jobs = []Status{}
	}
	writeJSON(w, http.StatusOK, jobs)
}

func (h handler) get(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqContext(r)
	defer cancel()
	h.answer(ctx, w, r, r.PathValue("id"), nil)
}

// answer writes the job's status, or err.
func (h handler) answer(ctx context.Context, w http.ResponseWriter, r *http.Request, id string, err error) {
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	st, err := h.s.Job(ctx, id)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// checkAPIJob is what PUT checks beyond Schedule: a runner some live node
// has registered, and fire times at least APIMinInterval apart.
func (s *Scheduler) checkAPIJob(j Job) error {
	c, err := s.checkJob(j)
	if err != nil {
		return err
	}
	if runners := s.liveRunners(); len(runners[j.Runner]) == 0 {
		known := make([]string, 0, len(runners))
		for k := range runners {
			known = append(known, k)
		}
		slices.Sort(known)
		return fmt.Errorf("%w: no live node has registered the runner %q (known: %s)", ErrInvalid, j.Runner, strings.Join(known, ", "))
	}
	if gap, ok := c.minGap(s.clock.Now(), 200); ok && s.cfg.APIMinInterval > 0 && gap < s.cfg.APIMinInterval {
		return fmt.Errorf("%w: job %q would fire every %v; the API takes at least %v between fire times",
			ErrInvalid, j.ID, gap, s.cfg.APIMinInterval)
	}
	return nil
}

// maxJobBody bounds a PUT body: the parameters are bounded far lower.
const maxJobBody = 1 << 20

func (h handler) put(w http.ResponseWriter, r *http.Request) {
	var j Job
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJobBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		httperr.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a job's body is at most %d bytes", maxJobBody))
		return
	}
	if err == nil {
		err = json.Unmarshal(body, &j)
	}
	if err != nil {
		h.writeError(w, r, fmt.Errorf("%w: job body: %v", ErrInvalid, err))
		return
	}
	if j.ID == "" {
		j.ID = r.PathValue("id")
	}
	if j.ID != r.PathValue("id") {
		h.writeError(w, r, fmt.Errorf("%w: body names job %q, path %q", ErrInvalid, j.ID, r.PathValue("id")))
		return
	}
	if err := h.s.checkAPIJob(j); err != nil {
		h.writeError(w, r, err)
		return
	}
	ctx, cancel := reqContext(r)
	defer cancel()
	h.answer(ctx, w, r, j.ID, h.s.Schedule(ctx, j))
}

func (h handler) delete(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqContext(r)
	defer cancel()
	if err := h.s.Delete(ctx, r.PathValue("id")); err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("id")})
}

func (h handler) action(f func(context.Context, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := reqContext(r)
		defer cancel()
		id := r.PathValue("id")
		h.answer(ctx, w, r, id, f(ctx, id))
	}
}

// statusOf maps an error to an HTTP status.
func statusOf(err error) int {
	for _, m := range []struct {
		err    error
		status int
	}{
		{ErrNotFound, http.StatusNotFound},
		{ErrInvalid, http.StatusBadRequest},
		{ErrNoStore, http.StatusBadRequest},
		{ErrNoRunner, http.StatusConflict},
		{ErrConflict, http.StatusConflict},
		{ErrClosed, http.StatusServiceUnavailable},
		{cp.ErrTooLarge, http.StatusRequestEntityTooLarge},
		{cp.ErrNoLeader, http.StatusServiceUnavailable},
		{cp.ErrClosed, http.StatusServiceUnavailable},
		{cp.ErrIndeterminate, http.StatusGatewayTimeout},
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
	} {
		if errors.Is(err, m.err) {
			return m.status
		}
	}
	return http.StatusInternalServerError
}

// writeError answers err with its status (statusOf) and message; a 500's
// cause is logged under the request ID the answer carries.
func (h handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	if status == http.StatusInternalServerError {
		httperr.Internal(w, r, h.s.log, err)
		return
	}
	httperr.Write(w, status, err.Error())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
