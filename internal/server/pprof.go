package server

import (
	"net/http"
	"net/http/pprof"

	"github.com/shoal-dev/shoal/cluster/cp/cphttp"
)

// pprofRoutes serve Go's profiles of this node, for administrators only:
// for example
//
//	go tool pprof -seconds 30 'http://admin:PW@HOST/debug/pprof/profile'
//
// (They were served by the store's operations routes until those moved to
// cphttp, and were lost in the move.)
func pprofRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", cphttp.RequireAdmin(caller, pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", cphttp.RequireAdmin(caller, pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", cphttp.RequireAdmin(caller, pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", cphttp.RequireAdmin(caller, pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", cphttp.RequireAdmin(caller, pprof.Trace))
}
