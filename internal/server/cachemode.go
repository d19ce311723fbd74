package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp/cphttp"

	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/httperr"
	"github.com/shoal-dev/shoal/l2cache"
)

// cacheModeRoutes serve the cluster's cache mode (l2cache.ModeKeeper):
//
//	GET /v1/cache/mode   the mode record, as the store has it, and this node's view
//	PUT /v1/cache/mode   {"mode": "near"} switches the running cluster; answers when done
//
// Both are for administrators: the mode says how the cluster is run, and
// switching it changes every node.
func (s *Server) cacheModeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cache/mode", cphttp.RequireAdmin(caller, s.getCacheMode))
	mux.HandleFunc("PUT /v1/cache/mode", cphttp.RequireAdmin(caller, s.putCacheMode))
}

// decodeSmallJSON decodes an operator's small JSON request body (at most
// 4 KiB, no unknown fields) into dst; past the limit the error is an
// *http.MaxBytesError (writeBodyError answers it 413).
func decodeSmallJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
}

// writeBodyError answers a request body that could not be read: 413 past
// the route's limit, else 400 with want and the reason.
func writeBodyError(w http.ResponseWriter, err error, want string) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		httperr.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooBig.Limit))
		return
	}
	httperr.Write(w, http.StatusBadRequest, fmt.Sprintf("%s: %v", want, err))
}

func opsContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 60*time.Second)
}

// CacheModeView is GET /v1/cache/mode's answer.
type CacheModeView struct {
	// Cluster is the record in the consistent store.
	Cluster l2cache.ModeRecord `json:"cluster"`
	// Node is the record the answering node has adopted.
	Node l2cache.ModeRecord `json:"node"`
}

func (s *Server) getCacheMode(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := opsContext(r)
	defer cancel()
	rec, err := l2cache.ReadMode(ctx, s.store)
	if err != nil {
		cphttp.WriteError(w, r, s.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, CacheModeView{Cluster: rec, Node: s.svc.cache.ModeStatus()})
}

func (s *Server) putCacheMode(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := opsContext(r)
	defer cancel()
	var req struct {
		Mode string `json:"mode"`
	}
	if err := decodeSmallJSON(w, r, &req); err != nil {
		writeBodyError(w, err, `want a JSON body {"mode": "local|distributed|near"}`)
		return
	}
	rec, err := l2cache.SetMode(ctx, s.store, req.Mode)
	var fe *config.FieldError
	switch {
	case errors.As(err, &fe):
		httperr.Write(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, l2cache.ErrSwitching):
		httperr.WriteBody(w, http.StatusConflict, struct {
			httperr.Body
			Cluster l2cache.ModeRecord `json:"cluster"`
		}{httperr.Of(err.Error()), rec})
	case err != nil:
		cphttp.WriteError(w, r, s.cfg.Logger, err)
	default:
		s.cfg.Logger.Info("cache mode switched", "mode", rec.Mode, "epoch", rec.Epoch)
		writeJSON(w, http.StatusOK, CacheModeView{Cluster: rec, Node: s.svc.cache.ModeStatus()})
	}
}
