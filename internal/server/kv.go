package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/cluster/cp"
)

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

// maxKVBody bounds a PUT body; the store refuses values above its own limit
// with a clear error, this only stops a client from streaming gigabytes.
const maxKVBody = 8 << 20

func (s *Server) kvRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/kv", s.kvList)
	mux.HandleFunc("GET /v1/kv/{key...}", s.kvGet)
	mux.HandleFunc("PUT /v1/kv/{key...}", s.kvPut)
	mux.HandleFunc("DELETE /v1/kv/{key...}", s.kvDelete)
}

func kvContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

func (s *Server) kvGet(w http.ResponseWriter, r *http.Request) {
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
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, kvView(kv))
}

func (s *Server) kvList(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	stale, err := boolParam(r, "stale")
	if err != nil {
		writeError(w, err)
		return
	}
	var list []cp.KV
	if stale {
		list = s.store.StaleList(prefix)
	} else {
		ctx, cancel := kvContext(r)
		defer cancel()
		if list, err = s.store.List(ctx, prefix); err != nil {
			writeError(w, err)
			return
		}
	}
	out := make([]KVView, 0, len(list))
	for _, kv := range list {
		out = append(out, kvView(kv))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) kvPut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxKVBody))
	if err != nil {
		writeError(w, fmt.Errorf("%w: request body: %v", cp.ErrTooLarge, err))
		return
	}
	cas, hasCAS, err := uintParam(r, "cas")
	if err != nil {
		writeError(w, err)
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
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KVView{Key: key, Version: version})
}

func (s *Server) kvDelete(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	v, hasV, err := uintParam(r, "version")
	if err != nil {
		writeError(w, err)
		return
	}
	var opts []cp.WriteOption
	if hasV {
		opts = append(opts, cp.IfVersion(v))
	}
	ctx, cancel := kvContext(r)
	defer cancel()
	if err := s.store.Delete(ctx, key, opts...); err != nil {
		writeError(w, err)
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

// writeError answers with the status that fits the store's error and a
// JSON body saying what was wrong.
func writeError(w http.ResponseWriter, err error) {
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
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
