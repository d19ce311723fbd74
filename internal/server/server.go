// Package server assembles a shoal node: the cluster member, its share of
// the consistent store, and the HTTP endpoints it serves. cmd/shoal runs it as a process; tests run it in
// process.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/cluster/cp/cphttp"
	"github.com/shoal-dev/shoal/dmap"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/dirlock"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/httperr"
	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/internal/tlsutil"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/packcache"
	"github.com/shoal-dev/shoal/resp"
)

// Version is the build version, set by the linker (-X) or left as "dev".
var Version = "dev"

// Server is a running node.
type Server struct {
	cfg   Config
	node  *cluster.Node
	trans *cp.Transport
	store *cp.Store
	// tls is the node's certificates (nil without TLS); refusals counts
	// the peer traffic the RPC, raft and gossip refused.
	tls      *tlsutil.Reloader
	refusals tlsutil.Refusals
	// member is node once it has started: raft's transport, which starts
	// first, admits peers through it.
	member atomic.Pointer[cluster.Node]
	svc    services
	lock   *dirlock.Lock
	ln     net.Listener
	respLn net.Listener // the RESP endpoint's, nil when it is off
	http   *http.Server
	done   chan struct{}
	err    error
	once   sync.Once
	shut   error
}

// Start is StartContext without a context.
func Start(cfg Config) (*Server, error) { return StartContext(context.Background(), cfg) }

// StartContext locks the data directory, listens for HTTP, starts the
// cluster member and serves. A data directory held by another process is
// refused (dirlock.ErrLocked, naming its PID) after cfg.LockWait; every
// wait at start-up ends when ctx does.
func StartContext(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var tlsConfig *tls.Config
	if cfg.HTTP.TLS.Enabled() {
		kp, err := newKeyPair(cfg.HTTP.TLS, cfg.Logger)
		if err != nil {
			return nil, err
		}
		tlsConfig = kp.serverConfig()
	}
	if err := privateDir(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	lock, err := dirlock.Acquire(ctx, cfg.DataDir, cfg.LockWait)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		lock.Release()
		return nil, fmt.Errorf("http listen on %s: %w", cfg.HTTPAddr, err)
	}
	s := &Server{cfg: cfg, lock: lock, ln: ln, done: make(chan struct{})}
	if cfg.RESP.Addr != "" {
		if s.respLn, err = net.Listen("tcp", cfg.RESP.Addr); err != nil {
			ln.Close()
			lock.Release()
			return nil, fmt.Errorf("resp listen on %s: %w", cfg.RESP.Addr, err)
		}
	}
	ln = newClientLimit(ln, cfg.HTTP.MaxConnsPerClient, cfg.Logger)
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	handler, err := s.start(ctx)
	if err != nil {
		ln.Close()
		if s.respLn != nil {
			s.respLn.Close()
		}
		lock.Release()
		return nil, err
	}
	s.http = &http.Server{
		// No read or write timeout: a clone may stream for minutes. The
		// front holds request bodies to a minimum rate instead.
		Handler:           handler,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		// HTTP/1.1 only, under TLS too (a non-nil empty map turns h2 off).
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	// Shutdown waits for every request; the dashboard's event streams
	// would never end by themselves.
	s.http.RegisterOnShutdown(s.svc.ui.EndStreams)
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// privateDir makes dir (and its parents) if missing, and makes it its
// owner's alone (0700) if others may read it.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return os.Chmod(dir, st.Mode().Perm()&^0o077)
	}
	return nil
}

// start starts the parts and the services, or stops what it started.
func (s *Server) start(ctx context.Context) (http.Handler, error) {
	err := s.startParts()
	var h http.Handler
	if err == nil {
		h, err = s.startServices(ctx, s.routes())
	}
	if err != nil {
		s.closeServices()
		s.closeParts()
		return nil, err
	}
	return h, nil
}

// startParts starts the raft transport, the cluster member (advertising
// the raft address) and the store.
func (s *Server) startParts() error {
	cfg := &s.cfg
	var err error
	if cfg.TLS.Enabled() {
		tc := cfg.TLS
		tc.Name, tc.Logger = cfg.Cluster.Name, cfg.Logger
		if s.tls, err = tlsutil.NewReloader(tc); err != nil {
			return err
		}
		cfg.Cluster.TLS = s.tls
	}
	cfg.Cluster.Refusals = &s.refusals
	tc := cp.TransportConfig{Bind: cfg.RaftAddr, Advertise: cfg.RaftAdvertise, Logger: cfg.Logger, TLS: s.tls}
	if s.tls != nil {
		refusals := cluster.NewRefusalLog(&s.refusals, cfg.Logger)
		tc.Admit = s.admitRaft
		tc.Refused = func(reason, remote, name string, err error) {
			refusals.Refuse(cluster.ListenerRaft, reason, remote, name, err.Error())
		}
	}
	if s.trans, err = cp.NewTransport(tc); err != nil {
		return err
	}
	cfg.Cluster.HTTPAddr = s.ln.Addr().String()
	cfg.Cluster.RaftAddr = string(s.trans.LocalAddr())
	if s.respLn != nil {
		cfg.Cluster.RESPAddr = s.respLn.Addr().String()
	}
	if cfg.Cluster.Version == "" {
		cfg.Cluster.Version = Version
	}
	// The member logs to the node's logger, as every other part: Validate
	// (the cluster's own, filling slog.Default()) may have run before the
	// node's logger was settled (shoal node opens --log-file after it).
	cfg.Cluster.Logger = cfg.Logger
	if s.node, err = cluster.Start(cfg.Cluster); err != nil {
		return err
	}
	s.member.Store(s.node)
	sc := cfg.Store
	sc.Node, sc.Transport, sc.DataDir, sc.Logger = s.node, s.trans, cfg.DataDir, cfg.Logger
	s.store, err = cp.Open(sc)
	return err
}

// closeParts stops what startParts started, in reverse.
func (s *Server) closeParts() error {
	var errs []error
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.node != nil {
		errs = append(errs, s.node.Close())
	}
	if s.trans != nil {
		errs = append(errs, s.trans.Close())
	}
	if s.tls != nil {
		s.tls.Close()
	}
	return errors.Join(errs...)
}

// admitRaft admits to raft a peer that is a member of the cluster, waiting
// until ctx ends for this node's member to start and for the peer to
// become a member.
func (s *Server) admitRaft(ctx context.Context, name string) error {
	for {
		if n := s.member.Load(); n != nil {
			return n.AdmitPeer(ctx, name)
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.New("this node has not joined the cluster yet")
		case <-t.C:
		}
	}
}

// Node is the cluster member.
func (s *Server) Node() *cluster.Node { return s.node }

// Store is the consistent store.
func (s *Server) Store() *cp.Store { return s.store }

// HTTPAddr is the address the HTTP endpoints listen on.
func (s *Server) HTTPAddr() string { return s.ln.Addr().String() }

// RESPAddr is the address the Redis protocol endpoint listens on, "" when
// it is off.
func (s *Server) RESPAddr() string {
	if s.respLn == nil {
		return ""
	}
	return s.respLn.Addr().String()
}

// Maps is the node's part of the named maps.
func (s *Server) Maps() *dmap.DMap { return s.svc.maps }

// RESP is the Redis protocol endpoint, nil when it is off.
func (s *Server) RESP() *resp.Server { return s.svc.resp }

// Shutdown drains: /readyz turns false and new requests are refused while
// those in flight (and the git operations they began) finish until ctx
// ends; then the HTTP server, the services, raft and the cluster member
// stop. Safe to call twice; the second call returns the first's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		drainErr := s.svc.front.Drain(ctx)
		httpErr := s.http.Shutdown(ctx)
		<-s.done
		s.shut = errors.Join(drainErr, httpErr, s.err, s.closeServices(), s.closeParts(), s.lock.Release())
	})
	return s.shut
}

// Cache is the node's L2 cache.
func (s *Server) Cache() *l2cache.Cache { return s.svc.cache }

// DB is the domain database.
func (s *Server) DB() *domain.Store { return s.svc.db }

// Packs is the pack cache, nil when it is off.
func (s *Server) Packs() *packcache.Cache { return s.svc.packs }

// Front is the HTTP front.
func (s *Server) Front() *gitfront.Front { return s.svc.front }

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": s.node.Name()})
	})
	mux.HandleFunc("GET /v1/cluster", requireUser(s.handleCluster))
	mux.Handle("GET /v1/stats", requireUser(nodestats.Handler(&s.svc.stats, isAdmin).ServeHTTP))
	cphttp.Register(mux, cphttp.Config{Store: s.store, Self: s.node.Name(), LeaderHTTP: s.memberHTTP, Caller: caller, Logger: s.cfg.Logger,
		SystemPrefixes: SystemKeyPrefixes})
	s.cacheModeRoutes(mux)
	s.keyringRoutes(mux)
	pprofRoutes(mux)
	mux.HandleFunc("/", httperr.NoRoute(mux)) // the mux's own 404 and 405, as JSON
	return mux
}

// SystemKeyPrefixes are the key prefixes of the consistent store that the
// node itself writes: the partition table, the cache mode and the read
// leases (l2/), the scheduler's jobs and runners (scheduler/), the
// repositories' generations and push markers (packcache/), the cluster
// statistics (stats/). /v1/kv serves them read-only, to administrators
// too; a part that keeps keys elsewhere must add its prefix here
// (TestSystemKeysAreCovered checks what a running node writes).
var SystemKeyPrefixes = []string{"l2/", "scheduler/", "packcache/", "stats/"}

// caller is who the front authenticated, for the store's routes.
func caller(r *http.Request) (authenticated, admin bool) {
	p, ok := gitfront.PrincipalFrom(r.Context())
	return ok, p.Admin
}

// isAdmin reports whether the front authenticated an administrator.
func isAdmin(r *http.Request) bool {
	_, admin := caller(r)
	return admin
}

// requireUser lets only authenticated callers through to h: 401 with
// WWW-Authenticate for an anonymous one.
func requireUser(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ok, _ := caller(r); !ok {
			cphttp.Unauthorized(w, "authentication required")
			return
		}
		h(w, r)
	}
}

// memberHTTP is the HTTP address of the named member, "" if unknown.
func (s *Server) memberHTTP(name string) string {
	for _, m := range s.node.Members() {
		if m.Name == name {
			return m.HTTP
		}
	}
	return ""
}

// ClusterView is the JSON of GET /v1/cluster.
type ClusterView struct {
	Self    string       `json:"self"`
	Members []MemberView `json:"members"`
	Raft    RaftView     `json:"raft"`
	// Cache is the cluster's cache mode as the answering node has
	// adopted it (a member's own cache_mode is the mode it was started
	// with; every member runs the cluster's).
	Cache l2cache.ModeRecord `json:"cache"`
}

// RaftView is the raft group as the answering node sees it.
type RaftView struct {
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	// Role is the answering node's own role: leader, follower, candidate.
	Role        string `json:"role"`
	CommitIndex uint64 `json:"commit_index"`
}

// MemberView is one member in a ClusterView.
type MemberView struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Gossip, RPC, HTTP and Raft are the member's addresses, shown to
	// administrators only (empty, and left out, for other users).
	Gossip    string `json:"gossip,omitempty"`
	RPC       string `json:"rpc,omitempty"`
	HTTP      string `json:"http,omitempty"`
	CacheMode string `json:"cache_mode"`
	Version   string `json:"version"`
	// RaftRole is leader, voter, nonvoter, or "" for a member outside the
	// raft configuration.
	RaftRole string `json:"raft_role"`
	Raft     string `json:"raft,omitempty"`
}

// handleCluster answers GET /v1/cluster. The members' addresses are for
// administrators: another user sees names, states, roles, cache modes and
// versions.
func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	admin := isAdmin(r)
	st := s.store.Status()
	v := ClusterView{Self: s.node.Name(), Members: []MemberView{},
		Raft:  RaftView{Leader: st.Leader, Term: st.Term, Role: st.Role, CommitIndex: st.CommitIndex},
		Cache: s.svc.cache.ModeStatus()}
	for _, m := range s.node.Members() {
		role := st.Servers[m.Name]
		if m.Name == st.Leader {
			role = "leader"
		}
		mv := MemberView{Name: m.Name, State: string(m.State), CacheMode: m.CacheMode, Version: m.Version, RaftRole: role}
		if admin {
			mv.Gossip, mv.RPC, mv.HTTP, mv.Raft = m.Addr, m.RPC, m.HTTP, m.Raft
		}
		v.Members = append(v.Members, mv)
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
