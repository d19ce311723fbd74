// Package server assembles a shoal node: the cluster member, its share of
// the consistent store, and the HTTP endpoints it serves. cmd/shoal runs it as a process; tests run it in
// process.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
)

// Version is the build version, set by the linker (-X) or left as "dev".
var Version = "dev"

// Config configures a Server.
type Config struct {
	// Cluster configures the cluster member. Its HTTPAddr is filled with
	// the HTTP listener's address.
	Cluster cluster.Config
	// HTTPAddr is where the HTTP endpoints listen, "host:port".
	HTTPAddr string
	// DataDir is the node's own directory; it is created if missing.
	DataDir string
	// RaftAddr is where raft listens ("host:port"); RaftAdvertise, if
	// set, is the address peers use.
	RaftAddr, RaftAdvertise string
	// Store configures the consistent store; Node, Transport, DataDir and
	// Logger are filled by Start.
	Store cp.Config
	// Logger receives the node's logs.
	Logger *slog.Logger
}

// Server is a running node.
type Server struct {
	cfg   Config
	node  *cluster.Node
	trans *raft.NetworkTransport
	store *cp.Store
	ln    net.Listener
	http  *http.Server
	done  chan struct{}
	err   error
}

// Start listens for HTTP, starts the cluster member and serves.
func Start(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http listen on %s: %w", cfg.HTTPAddr, err)
	}
	s := &Server{cfg: cfg, ln: ln, done: make(chan struct{})}
	if err := s.startParts(); err != nil {
		s.closeParts()
		ln.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// startParts starts the raft transport, the cluster member (advertising
// the raft address) and the store.
func (s *Server) startParts() error {
	cfg := &s.cfg
	var err error
	if s.trans, err = cp.NewTCPTransport(cfg.RaftAddr, cfg.RaftAdvertise, cfg.Logger); err != nil {
		return err
	}
	cfg.Cluster.HTTPAddr = s.ln.Addr().String()
	cfg.Cluster.RaftAddr = string(s.trans.LocalAddr())
	if cfg.Cluster.Version == "" {
		cfg.Cluster.Version = Version
	}
	if cfg.Cluster.Logger == nil {
		cfg.Cluster.Logger = cfg.Logger
	}
	if s.node, err = cluster.Start(cfg.Cluster); err != nil {
		return err
	}
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
	return errors.Join(errs...)
}

// Node is the cluster member.
func (s *Server) Node() *cluster.Node { return s.node }

// Store is the consistent store.
func (s *Server) Store() *cp.Store { return s.store }

// HTTPAddr is the address the HTTP endpoints listen on.
func (s *Server) HTTPAddr() string { return s.ln.Addr().String() }

// Shutdown stops accepting HTTP requests, lets those in flight finish until
// ctx ends, stops raft, then leaves the cluster. Safe to call twice.
func (s *Server) Shutdown(ctx context.Context) error {
	httpErr := s.http.Shutdown(ctx)
	<-s.done
	return errors.Join(httpErr, s.err, s.closeParts())
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": s.node.Name()})
	})
	mux.HandleFunc("GET /v1/cluster", s.handleCluster)
	s.kvRoutes(mux)
	return mux
}

// ClusterView is the JSON of GET /v1/cluster.
type ClusterView struct {
	Self    string       `json:"self"`
	Members []MemberView `json:"members"`
	Raft    RaftView     `json:"raft"`
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
	Name      string `json:"name"`
	State     string `json:"state"`
	Gossip    string `json:"gossip"`
	RPC       string `json:"rpc"`
	HTTP      string `json:"http"`
	CacheMode string `json:"cache_mode"`
	Version   string `json:"version"`
	// RaftRole is leader, voter, nonvoter, or "" for a member outside the
	// raft configuration.
	RaftRole string `json:"raft_role"`
	Raft     string `json:"raft"`
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	st := s.store.Status()
	v := ClusterView{Self: s.node.Name(), Members: []MemberView{},
		Raft: RaftView{Leader: st.Leader, Term: st.Term, Role: st.Role, CommitIndex: st.CommitIndex}}
	for _, m := range s.node.Members() {
		role := st.Servers[m.Name]
		if m.Name == st.Leader {
			role = "leader"
		}
		v.Members = append(v.Members, MemberView{
			Name: m.Name, State: string(m.State), Gossip: m.Addr, RPC: m.RPC,
			HTTP: m.HTTP, CacheMode: m.CacheMode, Version: m.Version, RaftRole: role, Raft: m.Raft,
		})
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
