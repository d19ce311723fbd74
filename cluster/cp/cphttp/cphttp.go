// Package cphttp serves the consistent store (package cp) over HTTP: the
// key/value API under /v1/kv, and the operators' routes — snapshots and
// the raft configuration. Only administrators may use any of them.
//
// Every route is for administrators (Config.Caller). Keys under
// Config.SystemPrefixes are read-only.
//
//	GET    /v1/kv?prefix=P[&stale]      the keys under P, as JSON
//	GET    /v1/kv/KEY[?stale]           one key (404 if absent)
//	PUT    /v1/kv/KEY[?cas=VERSION]     write the body (compare-and-set on VERSION)
//	DELETE /v1/kv/KEY[?version=V]       delete (if at version V)
//	GET    /v1/snapshot                 a snapshot file of the store (shoal snapshot save)
//	PUT    /v1/snapshot                 restore one onto the running cluster (shoal snapshot restore)
//	GET    /v1/raft/peers               the raft configuration (shoal raft peers)
//	DELETE /v1/raft/peers/{name}        remove a server that will not come back (shoal raft remove-peer)
//
// Errors are JSON {"errors":[{"message": …}]} with the status that fits
// the store's error (404, 409, 400, 413, 503, 504); anything else is 500
// with a request ID, its cause logged under that ID (package httperr). What only the leader does
// (all the operators' routes but listing peers) is answered on a follower
// with 307 Temporary Redirect to the same path on the leader's HTTP
// address, so a snapshot never passes through the peer RPC; during an
// election it waits for a leader (up to leaderWait).
package cphttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/httperr"
)

// Config is what the routes need.
type Config struct {
	// Store is the node's share of the consistent store.
	Store *cp.Store
	// Self is this node's name, as the store's Status names the leader.
	Self string
	// LeaderHTTP returns the HTTP address ("host:port") of the named
	// member, "" if unknown; nil: followers never redirect, they answer
	// 503 once leaderWait has passed.
	LeaderHTTP func(name string) string
	// Caller reports whether the request's caller is authenticated, and
	// whether as an administrator (the operators' routes need one). Nil:
	// every caller is anonymous.
	Caller func(r *http.Request) (authenticated, admin bool)
	// Logger receives the causes of 500 answers (default slog.Default()).
	Logger *slog.Logger
	// SystemPrefixes are key prefixes the system itself writes: /v1/kv
	// serves them read-only (403 on PUT and DELETE), to administrators
	// too.
	SystemPrefixes []string
}

// Register mounts the routes on mux.
func Register(mux *http.ServeMux, cfg Config) {
	if cfg.Caller == nil {
		cfg.Caller = func(*http.Request) (bool, bool) { return false, false }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &api{cfg: cfg, store: cfg.Store}
	mux.HandleFunc("GET /v1/kv", s.admin(s.kvList))
	mux.HandleFunc("GET /v1/kv/{key...}", s.admin(s.kvGet))
	mux.HandleFunc("PUT /v1/kv/{key...}", s.admin(s.writable(s.kvPut)))
	mux.HandleFunc("DELETE /v1/kv/{key...}", s.admin(s.writable(s.kvDelete)))
	mux.HandleFunc("GET /v1/snapshot", s.admin(s.snapshotSave))
	mux.HandleFunc("PUT /v1/snapshot", s.admin(s.snapshotRestore))
	mux.HandleFunc("GET /v1/raft/peers", s.admin(s.raftPeers))
	mux.HandleFunc("DELETE /v1/raft/peers/{name}", s.admin(s.raftRemovePeer))
}

type api struct {
	cfg   Config
	store *cp.Store
}

// KVView is a key in the JSON of /v1/kv. Value holds the bytes as a string
// when they are UTF-8, ValueBase64 (standard encoding, by encoding/json's
// []byte rule) otherwise.
type KVView struct {
	Key         string `json:"key"`
	Value       string `json:"value,omitempty"`
	ValueBase64 []byte `json:"value_base64,omitempty"`
	Version     uint64 `json:"version"`
}

func kvView(kv cp.KV) KVView {
	v := KVView{Key: kv.Key, Version: kv.Version}
	if utf8.Valid(kv.Value) {
		v.Value = string(kv.Value)
	} else {
		v.ValueBase64 = kv.Value
	}
	return v
}

// writable refuses (403) a write to a key under one of the system's
// prefixes.
func (s *api) writable(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		for _, p := range s.cfg.SystemPrefixes {
			if strings.HasPrefix(key, p) {
				httperr.Write(w, http.StatusForbidden, fmt.Sprintf(
					"key %q is the system's (prefix %q): read-only through /v1/kv", key, p))
				return
			}
		}
		h(w, r)
	}
}

// maxKVBody bounds a PUT body; the store refuses values above its own limit
// with a clear error, this only stops a client from streaming gigabytes.
const maxKVBody = 8 << 20

// MaxKVBody and MaxSnapshotBody are the largest bodies PUT /v1/kv/KEY
// and PUT /v1/snapshot take, for a front that refuses a longer announced
// body before reading it.
const (
	MaxKVBody       = maxKVBody
	MaxSnapshotBody = maxSnapshotBody
)

func kvContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

func (s *api) kvGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	var kv cp.KV
	var err error
	if stale, perr := boolParam(r, "stale"); perr != nil {
		err = perr
	} else if stale {
		kv, err = s.store.StaleGet(key)
	} else {
		ctx, cancel := kvContext(r)
		defer cancel()
		kv, err = s.store.Get(ctx, key)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, kvView(kv))
}

func (s *api) kvList(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	stale, err := boolParam(r, "stale")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var list []cp.KV
	if stale {
		list = s.store.StaleList(prefix)
	} else {
		ctx, cancel := kvContext(r)
		defer cancel()
		if list, err = s.store.List(ctx, prefix); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	out := make([]KVView, 0, len(list))
	for _, kv := range list {
		out = append(out, kvView(kv))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *api) kvPut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxKVBody))
	if err != nil {
		if tooLarge(err) {
			s.writeError(w, r, fmt.Errorf("%w: request body: %v", cp.ErrTooLarge, err))
		} else {
			httperr.Write(w, http.StatusBadRequest, "reading the request body: "+err.Error())
		}
		return
	}
	cas, hasCAS, err := uintParam(r, "cas")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := kvContext(r)
	defer cancel()
	var version uint64
	if hasCAS {
		version, err = s.store.CompareAndSet(ctx, key, cas, body)
	} else {
		version, err = s.store.Put(ctx, key, body)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, KVView{Key: key, Version: version})
}

func (s *api) kvDelete(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	v, hasV, err := uintParam(r, "version")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var opts []cp.WriteOption
	if hasV {
		opts = append(opts, cp.IfVersion(v))
	}
	ctx, cancel := kvContext(r)
	defer cancel()
	if err := s.store.Delete(ctx, key, opts...); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": key})
}

func uintParam(r *http.Request, name string) (uint64, bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(q.Get(name), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%w: ?%s=%q is not a version number", cp.ErrInvalid, name, q.Get(name))
	}
	return v, true, nil
}

func boolParam(r *http.Request, name string) (bool, error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return false, nil
	}
	if q.Get(name) == "" {
		return true, nil
	}
	v, err := strconv.ParseBool(q.Get(name))
	if err != nil {
		return false, fmt.Errorf("%w: ?%s=%q is not true or false", cp.ErrInvalid, name, q.Get(name))
	}
	return v, nil
}

// tooLarge reports whether err is a body's http.MaxBytesReader limit.
func tooLarge(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}

// writeError is WriteError with the routes' logger.
func (s *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	WriteError(w, r, s.cfg.Logger, err)
}

// WriteError answers with the status that fits the store's error (404,
// 409, 400, 413, 503, 504) and its message; anything else is a 500 whose
// cause is logged to log under the request ID the answer carries.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status := http.StatusInternalServerError
	for _, m := range []struct {
		err    error
		status int
	}{
		{cp.ErrNotFound, http.StatusNotFound},
		{cp.ErrVersionMismatch, http.StatusConflict},
		{cp.ErrLeaseHeld, http.StatusConflict},
		{cp.ErrLeaseLost, http.StatusConflict},
		{cp.ErrFenced, http.StatusConflict},
		{cp.ErrInvalid, http.StatusBadRequest},
		{cp.ErrTooLarge, http.StatusRequestEntityTooLarge},
		{cp.ErrNoLeader, http.StatusServiceUnavailable},
		{cp.ErrClosed, http.StatusServiceUnavailable},
		{cp.ErrIndeterminate, http.StatusGatewayTimeout},
	} {
		if errors.Is(err, m.err) {
			status = m.status
			break
		}
	}
	if status == http.StatusInternalServerError {
		httperr.Internal(w, r, log, err)
		return
	}
	httperr.Write(w, status, err.Error())
}

// maxSnapshotBody bounds a restore's body.
const maxSnapshotBody = cp.MaxSnapshotSize

// admin lets only an authenticated administrator through.
func (s *api) admin(h http.HandlerFunc) http.HandlerFunc { return RequireAdmin(s.cfg.Caller, h) }

// RequireAdmin lets only callers that caller says are authenticated
// administrators through to h: 401 (with WWW-Authenticate) for an
// anonymous caller, 403 for anyone else.
func RequireAdmin(caller func(*http.Request) (authenticated, admin bool), h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		authenticated, admin := caller(r)
		switch {
		case !authenticated:
			Unauthorized(w, "authentication required: an administrator's credentials")
		case !admin:
			httperr.Write(w, http.StatusForbidden, "only administrators may do this")
		default:
			h(w, r)
		}
	}
}

// Unauthorized answers 401 with WWW-Authenticate and msg.
func Unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="shoal"`)
	httperr.Write(w, http.StatusUnauthorized, msg)
}

func opsContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 60*time.Second)
}

func (s *api) snapshotSave(w http.ResponseWriter, r *http.Request) {
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
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Header().Set("X-Shoal-Snapshot-Index", strconv.FormatUint(info.Index, 10))
	w.Header().Set("X-Shoal-Snapshot-Keys", strconv.Itoa(info.Keys))
	w.Write(buf.Bytes())
}

func (s *api) snapshotRestore(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := opsContext(r)
	defer cancel()
	// Before reading the body: a redirected client sends it again.
	if answered, _ := s.onLeader(ctx, w, r, s.store.LeaderOnly); answered {
		return
	}
	info, err := s.store.Restore(ctx, http.MaxBytesReader(w, r.Body, maxSnapshotBody))
	switch {
	case tooLarge(err):
		httperr.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a snapshot is at most %d bytes", maxSnapshotBody))
	case errors.Is(err, cp.ErrNotLeader): // leadership moved while reading
		httperr.Write(w, http.StatusServiceUnavailable, err.Error()+"; try again")
	case errors.Is(err, cp.ErrBadSnapshot):
		httperr.Write(w, http.StatusBadRequest, err.Error())
	case err != nil:
		s.writeError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, info)
	}
}

func (s *api) raftPeers(w http.ResponseWriter, r *http.Request) {
	peers, err := s.store.Peers()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, peers)
}

func (s *api) raftRemovePeer(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := opsContext(r)
	defer cancel()
	name := r.PathValue("name")
	answered, err := s.onLeader(ctx, w, r, func() error { return s.store.RemovePeer(ctx, name) })
	switch {
	case answered:
	case errors.Is(err, cp.ErrPeerAlive):
		httperr.Write(w, http.StatusConflict, err.Error())
	case err != nil:
		s.writeError(w, r, err)
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
func (s *api) onLeader(ctx context.Context, w http.ResponseWriter, r *http.Request, op func() error) (answered bool, err error) {
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
			httperr.Write(w, http.StatusServiceUnavailable, fmt.Sprintf("%v (waited %v for a leader)", err, leaderWait))
			return true, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// redirectToLeader answers with a redirect to the leader's HTTP address,
// if a leader is known and it is another node.
func (s *api) redirectToLeader(w http.ResponseWriter, r *http.Request) bool {
	leader := s.store.Status().Leader
	if leader == "" || leader == s.cfg.Self || s.cfg.LeaderHTTP == nil {
		return false
	}
	addr := s.cfg.LeaderHTTP(leader)
	if addr == "" {
		return false
	}
	scheme := "http"
	if r.TLS != nil { // the nodes of a cluster serve HTTPS alike
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: addr, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
