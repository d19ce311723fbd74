package server

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/cluster"
)

// handleMetrics writes the node's counters in the Prometheus text format.
// They are the same numbers the benchmark reads (l2cache.Stats,
// packcache.Stats, gitfront.Stats, the bus and RPC counters).
func (s *Server) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m := &promWriter{w: bufio.NewWriter(w), node: s.node.Name()}
	s.cacheMetrics(m)
	s.packMetrics(m)
	s.frontMetrics(m)
	s.clusterMetrics(m)
	m.w.Flush()
}

func (s *Server) cacheMetrics(m *promWriter) {
	st := s.svc.cache.Stats()
	names := make([]string, 0, len(st.Regions))
	for name := range st.Regions {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, c := range []struct {
		name, help string
		get        func(string) uint64
	}{
		{"hits", "gets answered from the cache", func(r string) uint64 { return st.Regions[r].Hits }},
		{"misses", "gets not answered from the cache", func(r string) uint64 { return st.Regions[r].Misses }},
		{"loads", "loads from the database", func(r string) uint64 { return st.Regions[r].Loads }},
		{"merged_loads", "gets that joined a load in flight", func(r string) uint64 { return st.Regions[r].MergedLoads }},
		{"puts", "loaded values cached", func(r string) uint64 { return st.Regions[r].Puts }},
		{"refused_puts", "loaded values refused as possibly stale", func(r string) uint64 { return st.Regions[r].RefusedPuts }},
		{"invalidations", "keys invalidated on this node", func(r string) uint64 { return st.Regions[r].Invalidations }},
	} {
		m.header("shoal_l2_"+c.name+"_total", c.help, "counter")
		for _, r := range names {
			m.sample("shoal_l2_"+c.name+"_total", `region="`+escape(r)+`"`, c.get(r))
		}
	}
	n := st.Node
	m.counter("shoal_l2_invalidations_sent_total", "invalidation messages published", n.InvalidationsSent)
	m.counter("shoal_l2_invalidations_received_total", "invalidation messages received", n.InvalidationsReceived)
	m.counter("shoal_l2_missed_clears_total", "region clears after missed messages", n.MissedClears)
	m.counter("shoal_l2_remote_calls_total", "calls to other nodes (DISTRIBUTED owners and backups)", n.RemoteCalls)
	m.counter("shoal_l2_remote_bytes_total", "bytes of those calls, both ways", n.RemoteBytes)
}

func (s *Server) packMetrics(m *promWriter) {
	if s.svc.packs == nil {
		return
	}
	st := s.svc.packs.Stats()
	m.header("shoal_pack_lookups_total", "upload-pack requests by result", "counter")
	for _, r := range []struct {
		result string
		v      uint64
	}{{"hit", st.Hits}, {"miss", st.Misses}, {"joined", st.Joined}, {"bypass", st.Bypasses}, {"rejected", st.Rejected}} {
		m.sample("shoal_pack_lookups_total", `result="`+r.result+`"`, r.v)
	}
	m.counter("shoal_pack_bytes_from_cache_total", "bytes served from cache files", st.BytesFromCache)
	m.counter("shoal_pack_bytes_from_git_total", "bytes served while git ran", st.BytesFromGit)
	m.counter("shoal_pack_bytes_written_total", "bytes written to cache files", st.BytesWritten)
	m.counter("shoal_pack_git_started_total", "git upload-pack processes started", st.GitStarted)
	m.counter("shoal_pack_evictions_total", "entries evicted for space", st.Evictions)
	m.counter("shoal_pack_expired_total", "entries expired", st.Expired)
	m.counter("shoal_pack_dropped_total", "entries dropped by pushes", st.Dropped)
	m.gauge("shoal_pack_entries", "published entries", float64(st.Entries))
	m.gauge("shoal_pack_bytes", "bytes of published entries", float64(st.Bytes))
}

func (s *Server) frontMetrics(m *promWriter) {
	st := s.svc.front.Stats()
	for _, c := range []struct{ name, help string }{
		{"served", "requests served"}, {"rejected", "requests refused with 503 (pool full)"},
		{"timed_out", "requests that waited too long in the queue"},
	} {
		m.header("shoal_pool_"+c.name+"_total", c.help, "counter")
		for _, p := range st.Pools {
			v := map[string]uint64{"served": p.Served, "rejected": p.Rejected, "timed_out": p.TimedOut}[c.name]
			m.sample("shoal_pool_"+c.name+"_total", `pool="`+string(p.Name)+`"`, v)
		}
	}
	m.header("shoal_pool_in_flight", "requests running", "gauge")
	for _, p := range st.Pools {
		m.sample("shoal_pool_in_flight", `pool="`+string(p.Name)+`"`, uint64(p.InFlight))
	}
	m.header("shoal_pool_queued", "requests waiting", "gauge")
	for _, p := range st.Pools {
		m.sample("shoal_pool_queued", `pool="`+string(p.Name)+`"`, uint64(p.Queued))
	}
}

func (s *Server) clusterMetrics(m *promWriter) {
	bs := s.node.Bus().Stats()
	m.counter("shoal_bus_published_total", "bus messages published", bs.Published.Load())
	m.counter("shoal_bus_delivered_total", "bus messages delivered to subscribers", bs.Delivered.Load())
	m.counter("shoal_bus_missed_total", "missed-message reports", bs.MissedReports.Load())
	rs := s.node.RPC().Stats()
	m.counter("shoal_rpc_calls_total", "peer RPC calls made", rs.Calls.Load())
	m.counter("shoal_rpc_call_errors_total", "peer RPC calls that failed", rs.CallErrors.Load())
	alive := 0
	for _, mb := range s.node.Members() {
		if mb.State == cluster.StateAlive {
			alive++
		}
	}
	m.gauge("shoal_cluster_members_alive", "members this node sees alive", float64(alive))
}

// promWriter writes the text exposition format, every sample labelled
// with the node.
type promWriter struct {
	w    *bufio.Writer
	node string
}

func (m *promWriter) header(name, help, typ string) {
	fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (m *promWriter) sample(name, labels string, v uint64) {
	fmt.Fprintf(m.w, "%s{node=\"%s\",%s} %d\n", name, escape(m.node), labels, v)
}

func (m *promWriter) counter(name, help string, v uint64) {
	m.header(name, help, "counter")
	fmt.Fprintf(m.w, "%s{node=\"%s\"} %d\n", name, escape(m.node), v)
}

func (m *promWriter) gauge(name, help string, v float64) {
	m.header(name, help, "gauge")
	fmt.Fprintf(m.w, "%s{node=\"%s\"} %g\n", name, escape(m.node), v)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escape(s string) string { return labelEscaper.Replace(s) }
