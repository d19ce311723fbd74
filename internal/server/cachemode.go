package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp/cphttp"

	"github.com/shoal-dev/shoal/internal/config"
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
// 4 KiB, no unknown fields) into dst.
func decodeSmallJSON(r *http.Request, dst any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	return dec.Decode(dst)
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
		cphttp.WriteError(w, err)
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
	if err := decodeSmallJSON(r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(`want a JSON body {"mode": "local|distributed|near"}: %v`, err)})
		return
	}
	rec, err := l2cache.SetMode(ctx, s.store, req.Mode)
	var fe *config.FieldError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case errors.Is(err, l2cache.ErrSwitching):
		writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "cluster": rec})
	case err != nil:
		cphttp.WriteError(w, err)
	default:
		s.cfg.Logger.Info("cache mode switched", "mode", rec.Mode, "epoch", rec.Epoch)
		writeJSON(w, http.StatusOK, CacheModeView{Cluster: rec, Node: s.svc.cache.ModeStatus()})
	}
}
