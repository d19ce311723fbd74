package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp/cphttp"
	"github.com/shoal-dev/shoal/internal/httperr"
)

// keyringRoutes serve the gossip keyring of every member
// (cluster.Node.Keyring), for administrators:
//
//	GET  /v1/keyring            every member's keys
//	POST /v1/keyring/install    {"key": "<base64>"}: install it on every member
//	POST /v1/keyring/use        {"key": "<base64>"}: encrypt with it on every member
//	POST /v1/keyring/remove     {"key": "<base64>"}: remove it from every member
//
// The answer is 200 with one result per member once each answered or the
// request's time ran out; a member's failure is in its result, and
// "failed" counts them.
func (s *Server) keyringRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/keyring", cphttp.RequireAdmin(caller, s.keyringOp))
	mux.HandleFunc("POST /v1/keyring/{op}", cphttp.RequireAdmin(caller, s.keyringOp))
}

// KeyringView is the answer of the keyring routes.
type KeyringView struct {
	Op      string                  `json:"op"`
	Results []cluster.KeyringResult `json:"results"`
	// Failed is how many members failed (or did not answer).
	Failed int `json:"failed"`
}

func (s *Server) keyringOp(w http.ResponseWriter, r *http.Request) {
	op := cluster.KeyringList
	var key []byte
	if r.Method == http.MethodPost {
		op = r.PathValue("op")
		switch op {
		case cluster.KeyringInstall, cluster.KeyringUse, cluster.KeyringRemove:
		default:
			httperr.Write(w, http.StatusNotFound, fmt.Sprintf("no keyring operation %q: install, use or remove", op))
			return
		}
		var req struct {
			Key string `json:"key"`
		}
		err := decodeSmallJSON(w, r, &req)
		if err == nil {
			key, err = cluster.DecodeGossipKey(req.Key)
		}
		if err != nil {
			writeBodyError(w, err, `want a JSON body {"key": "<base64 of 16, 24 or 32 bytes>"}`)
			return
		}
	}
	// A member that has not answered in this long is reported as such:
	// the operation is idempotent, to be repeated once it is back.
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	res, err := s.node.Keyring(ctx, op, key)
	switch {
	case errors.Is(err, cluster.ErrNoEncryption):
		httperr.Write(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		httperr.Write(w, http.StatusBadRequest, err.Error())
		return
	}
	v := KeyringView{Op: op, Results: res}
	for _, r := range res {
		if r.Error != "" {
			v.Failed++
		}
	}
	if op != cluster.KeyringList {
		s.cfg.Logger.Info("gossip keyring operation", "op", op, "members", len(res), "failed", v.Failed)
	}
	writeJSON(w, http.StatusOK, v)
}
