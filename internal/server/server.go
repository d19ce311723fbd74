// Package server assembles a shoal node: the cluster member and the HTTP
// endpoints it serves. cmd/shoal runs it as a process; tests run it in
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

	"github.com/shoal-dev/shoal/cluster"
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
	// Logger receives the node's logs.
	Logger *slog.Logger
}

// Server is a running node.
type Server struct {
	cfg  Config
	node *cluster.Node
	ln   net.Listener
	http *http.Server
	done chan struct{}
	err  error
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
	cfg.Cluster.HTTPAddr = ln.Addr().String()
	if cfg.Cluster.Version == "" {
		cfg.Cluster.Version = Version
	}
	if cfg.Cluster.Logger == nil {
		cfg.Cluster.Logger = cfg.Logger
	}
	node, err := cluster.Start(cfg.Cluster)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, node: node, ln: ln, done: make(chan struct{})}
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

// Node is the cluster member.
func (s *Server) Node() *cluster.Node { return s.node }

// HTTPAddr is the address the HTTP endpoints listen on.
func (s *Server) HTTPAddr() string { return s.ln.Addr().String() }

// Shutdown stops accepting HTTP requests, lets those in flight finish until
// ctx ends, then leaves the cluster. Safe to call twice.
func (s *Server) Shutdown(ctx context.Context) error {
	httpErr := s.http.Shutdown(ctx)
	<-s.done
	return errors.Join(httpErr, s.err, s.node.Close())
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": s.node.Name()})
	})
	mux.HandleFunc("GET /v1/cluster", s.handleCluster)
	return mux
}

// ClusterView is the JSON of GET /v1/cluster.
type ClusterView struct {
	Self    string       `json:"self"`
	Members []MemberView `json:"members"`
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
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	v := ClusterView{Self: s.node.Name(), Members: []MemberView{}}
	for _, m := range s.node.Members() {
		v.Members = append(v.Members, MemberView{
			Name: m.Name, State: string(m.State), Gossip: m.Addr, RPC: m.RPC,
			HTTP: m.HTTP, CacheMode: m.CacheMode, Version: m.Version,
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
