package resp

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/dmap"
)

var infoSections = []string{"server", "clients", "memory", "stats", "keyspace", "cluster", "commandstats"}

func cmdInfo(c *conn, a [][]byte) {
	want := map[string]bool{}
	for _, s := range a[1:] {
		want[strings.ToLower(string(s))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	var b strings.Builder
	for _, sec := range infoSections {
		if !all && !want[sec] || sec == "commandstats" && len(want) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(sec[:1]) + sec[1:] + "\r\n")
		b.WriteString(c.s.infoSection(sec))
	}
	c.o.verbatim(b.String())
}

func (s *Server) infoSection(sec string) string {
	var lines []string
	add := func(f string, v ...any) { lines = append(lines, fmt.Sprintf(f, v...)) }
	switch sec {
	case "server":
		_, port, _ := strings.Cut(s.Addr(), ":")
		add("redis_version:%s", redisVersion)
		add("shoal_version:%s", s.cfg.Version)
		add("redis_mode:cluster")
		add("os:%s %s", runtime.GOOS, runtime.GOARCH)
		add("arch_bits:64")
		add("process_id:%d", os.Getpid())
		add("run_id:%s", s.nodeID(s.self))
		add("tcp_port:%s", port)
		up := time.Since(s.start)
		add("uptime_in_seconds:%d", int(up.Seconds()))
		add("uptime_in_days:%d", int(up.Hours()/24))
		add("shoal_node:%s", s.self)
	case "clients":
		st := s.Stats()
		tracking := s.track.clients()
		add("connected_clients:%d", st.Connected)
		add("maxclients:%d", s.cfg.MaxClients)
		add("tracking_clients:%d", tracking)
		add("pubsub_clients:%d", s.ps.clients())
	case "memory":
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		ds := s.m.Stats()
		add("used_memory:%d", ms.HeapAlloc)
		add("used_memory_dataset:%d", ds.Bytes)
		add("maxmemory:%d", s.m.MaxBytes())
		add("maxmemory_policy:allkeys-random")
	case "stats":
		st := s.Stats()
		ds := s.m.Stats()
		add("total_connections_received:%d", st.Accepted)
		add("total_commands_processed:%d", st.Command)
		add("rejected_connections:%d", st.Rejected)
		add("expired_keys:%d", ds.Expired)
		add("evicted_keys:%d", ds.Evictions)
		add("shoal_forwarded_calls:%d", ds.RemoteCalls)
		add("shoal_not_acknowledged:%d", ds.NotAcked)
		add("shoal_replications:%d", ds.Replications)
		add("shoal_replication_messages:%d", ds.ReplMessages)
		add("shoal_invalidations_sent:%d", ds.InvalidationsSent)
		add("shoal_invalidations_received:%d", ds.InvalidationsGot)
		add("tracking_total_keys:%d", s.track.keys())
		add("pubsub_channels:%d", s.ps.channels())
	case "keyspace":
		// The whole cluster's keys, as DBSIZE counts them (each
		// partition at its owner), and those with a deadline.
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
		defer cancel()
		ps := allPartitions(s.m.Partitions())
		keys, err := s.m.DoEach(ctx, ps, dmap.Op{Code: dmap.CodeSize})
		var expires []dmap.Result
		if err == nil {
			expires, err = s.m.DoEach(ctx, ps, dmap.Op{Code: dmap.CodeSize, Flags: dmap.FlagExpire})
		}
		if err != nil {
			add("shoal_keyspace_error:%s", strings.ReplaceAll(errorText(err), "\r\n", " "))
			break
		}
		var n, e int64
		for i := range keys {
			n, e = n+keys[i].Int, e+expires[i].Int
		}
		if n > 0 {
			add("db0:keys=%d,expires=%d,avg_ttl=0", n, e)
		}
	case "cluster":
		add("cluster_enabled:1")
	case "commandstats":
		return s.commandStatsInfo()
	}
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}
