package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
)

// opsRoutes serves the consistent store's operations, beside the kv
// routes; only administrators may use them.
//
//	GET  /v1/snapshot               a snapshot file of the store (shoal snapshot save)
//	PUT  /v1/snapshot               restore one onto the running cluster (shoal snapshot restore)
//	GET  /v1/raft/peers             the raft configuration (shoal raft peers)
//	DELETE /v1/raft/peers/{name}    remove a server that will not come back (shoal raft remove-peer)
//
// What only the leader does (all but listing peers) is answered on a
// follower with 307 Temporary Redirect to the same path on the leader's
// HTTP address, so the file never passes through the peer RPC; during an
// election it waits for a leader (up to leaderWait).
func (s *Server) opsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/snapshot", s.admin(s.snapshotSave))
	mux.HandleFunc("PUT /v1/snapshot", s.admin(s.snapshotRestore))
	mux.HandleFunc("GET /v1/raft/peers", s.admin(s.raftPeers))
	mux.HandleFunc("DELETE /v1/raft/peers/{name}", s.admin(s.raftRemovePeer))
	// Go's profiles of this node, for administrators: for example
	// 'go tool pprof -seconds 30 http://admin:PW@HOST/debug/pprof/profile'.
	mux.HandleFunc("GET /debug/pprof/", s.admin(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", s.admin(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", s.admin(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", s.admin(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", s.admin(pprof.Trace))
}

// maxSnapshotBody bounds a restore's body.
const maxSnapshotBody = cp.MaxSnapshotSize

// admin lets only an authenticated administrator through.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := gitfront.PrincipalFrom(r.Context())
		switch {
		case !ok:
			w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "authentication required: an administrator's credentials"})
		case !p.Admin:
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "only administrators may do this"})
		default:
			h(w, r)
		}
	}
}

func opsContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 60*time.Second)
}

func (s *Server) snapshotSave(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := opsContext(r)
	defer cancel()
	var buf bytes.Buffer
	var info cp.SnapshotInfo
	answered, err := s.onLeader(ctx, w, r, func() error {
		buf.Reset()
		var err error
		info, err = s.store.Snapshot(ctx, &buf)
		return err
	})
	if answered {
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Header().Set("X-Shoal-Snapshot-Index", strconv.FormatUint(info.Index, 10))
	w.Header().Set("X-Shoal-Snapshot-Keys", strconv.Itoa(info.Keys))
	w.Write(buf.Bytes())
}

func (s *Server) snapshotRestore(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := opsContext(r)
	defer cancel()
	// Before reading the body: a redirected client sends it again.
	if answered, _ := s.onLeader(ctx, w, r, s.store.LeaderOnly); answered {
		return
	}
	info, err := s.store.Restore(ctx, http.MaxBytesReader(w, r.Body, maxSnapshotBody))
	switch {
	case errors.Is(err, cp.ErrNotLeader): // leadership moved while reading
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error() + "; try again"})
	case errors.Is(err, cp.ErrBadSnapshot):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case err != nil:
		writeError(w, err)
	default:
		writeJSON(w, http.StatusOK, info)
	}
}

func (s *Server) raftPeers(w http.ResponseWriter, r *http.Request) {
	peers, err := s.store.Peers()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, peers)
}

func (s *Server) raftRemovePeer(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := opsContext(r)
	defer cancel()
	name := r.PathValue("name")
	answered, err := s.onLeader(ctx, w, r, func() error { return s.store.RemovePeer(ctx, name) })
	switch {
	case answered:
	case errors.Is(err, cp.ErrPeerAlive):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case err != nil:
		writeError(w, err)
	default:
		writeJSON(w, http.StatusOK, map[string]string{"removed": name})
	}
}

// leaderWait bounds how long an operation waits for an election to end.
const leaderWait = 20 * time.Second

// onLeader runs op, which only the leader can do. While no leader is
// known, or the leader cannot confirm itself (an election is going on),
// it tries again every 100 ms for up to leaderWait; when another node
// leads, it answers with a redirect to that node. answered says that it
// wrote the response (the redirect, or 503 when no leader came).
func (s *Server) onLeader(ctx context.Context, w http.ResponseWriter, r *http.Request, op func() error) (answered bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	for {
		err = op()
		if !errors.Is(err, cp.ErrNotLeader) && !errors.Is(err, cp.ErrNoLeader) {
			return false, err
		}
		if errors.Is(err, cp.ErrNotLeader) && s.redirectToLeader(w, r) {
			return true, err
		}
		select {
		case <-ctx.Done():
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf("%v (waited %v for a leader)", err, leaderWait)})
			return true, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// redirectToLeader answers with a redirect to the leader's HTTP address,
// if a leader is known and it is another node.
func (s *Server) redirectToLeader(w http.ResponseWriter, r *http.Request) bool {
	leader := s.store.Status().Leader
	if leader == "" || leader == s.node.Name() {
		return false
	}
	for _, m := range s.node.Members() {
		if m.Name == leader && m.HTTP != "" {
			u := url.URL{Scheme: "http", Host: m.HTTP, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
			http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
			return true
		}
	}
	return false
}
