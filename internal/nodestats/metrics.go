package nodestats

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/resp"
)

// MetricsHandler serves /metrics from a registry of the node's own: the
// Go runtime and process collectors, and a collector that reads the
// node's counters at each scrape — the same numbers the benchmark reads
// (l2cache.Stats, packcache.Stats, gitfront.Stats, the bus and RPC
// counters). Every sample carries the node's name.
func MetricsHandler(src *Sources) http.Handler {
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"node": src.Node.Name()}, reg)
	wrapped.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		nodeCollector{src})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// nodeCollector is an unchecked collector: its metrics (per region, per
// pool) are known only when it collects.
type nodeCollector struct{ s *Sources }

func (nodeCollector) Describe(chan<- *prometheus.Desc) {}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	e := emitter{ch}
	c.s.cacheMetrics(e)
	c.s.packMetrics(e)
	c.s.frontMetrics(e)
	c.s.clusterMetrics(e)
	c.s.securityMetrics(e)
	c.s.mapMetrics(e)
}

// mapMetrics are the named maps' counters and the RESP endpoint's, per
// command: calls, errors and a latency histogram.
func (s *Sources) mapMetrics(e emitter) {
	if s.Maps != nil {
		st := s.Maps.Stats()
		e.gauge("shoal_maps_keys", "keys of the named maps this node owns", float64(st.Keys))
		e.gauge("shoal_maps_bytes", "bytes of the named maps this node owns (as the memory bound counts them)", float64(st.Bytes))
		e.gauge("shoal_maps_backup_keys", "keys this node holds as a backup", float64(st.BackupKeys))
		e.counter("shoal_maps_evictions_total", "keys evicted past --maps-max-bytes", st.Evictions)
		e.counter("shoal_maps_expired_total", "keys removed when their deadline passed", st.Expired)
		e.counter("shoal_maps_forwarded_total", "calls sent to another node's partitions", st.RemoteCalls)
		e.counter("shoal_maps_not_acked_total", "writes whose backups or holders could not be told (answered TRYAGAIN)", st.NotAcked)
		e.counter("shoal_maps_invalidations_sent_total", "invalidations sent to holders of changed keys", st.InvalidationsSent)
		e.counter("shoal_maps_takeovers_total", "partitions taken over from a backup copy", st.Takeovers)
		e.counter("shoal_maps_replications_total", "batches of a partition's changes sent to a backup", st.Replications)
		e.counter("shoal_maps_replication_messages_total", "messages that carried them (the batches of many partitions bound for one backup leave together)", st.ReplMessages)
	}
	if s.RESP == nil {
		return
	}
	st := s.RESP.Stats()
	e.gauge("shoal_resp_connections", "open RESP connections", float64(st.Connected))
	e.counter("shoal_resp_connections_total", "RESP connections accepted", st.Accepted)
	for _, c := range st.Commands {
		e.counter("shoal_resp_commands_total", "RESP commands run", c.Calls, "command", c.Name)
		e.counter("shoal_resp_command_errors_total", "RESP commands answered with an error", c.Failed, "command", c.Name)
		buckets := map[float64]uint64{}
		var cum uint64
		for i, b := range resp.LatencyBuckets {
			cum += c.Buckets[i]
			buckets[b] = cum
		}
		e.ch <- prometheus.MustNewConstHistogram(prometheus.NewDesc("shoal_resp_command_seconds", "RESP command latency, from reading it to its reply",
			[]string{"command"}, nil), c.Calls, float64(c.Usec)/1e6, buckets, c.Name)
	}
}

// securityMetrics are the certificates' expiry (the refused peers are
// among clusterMetrics).
func (s *Sources) securityMetrics(e emitter) {
	if s.TLS == nil {
		return
	}
	cert, ca := s.TLS.Expiry()
	now := s.TLS.Now()
	for _, c := range []struct {
		which string
		at    time.Time
	}{{"node", cert}, {"ca", ca}} {
		e.gauge("shoal_tls_cert_expiry_seconds", "seconds until the certificate expires (node: this node's; ca: the first of the CA certificates to expire)",
			c.at.Sub(now).Seconds(), "cert", c.which)
	}
}

// emitter turns values into constant metrics.
type emitter struct{ ch chan<- prometheus.Metric }

func (e emitter) counter(name, help string, v uint64, labels ...string) {
	e.emit(name, help, prometheus.CounterValue, float64(v), labels)
}

func (e emitter) gauge(name, help string, v float64, labels ...string) {
	e.emit(name, help, prometheus.GaugeValue, v, labels)
}

// durations sends an l2cache histogram (buckets bounded by
// l2cache.LagBucketBound, the last unbounded).
func (e emitter) durations(name, help string, h l2cache.DurationsSnapshot, labels ...string) {
	names, values := splitLabels(labels)
	buckets := map[float64]uint64{}
	var cum uint64
	for i, n := range h.Buckets {
		cum += n
		if i < len(h.Buckets)-1 {
			buckets[l2cache.LagBucketBound(i).Seconds()] = cum
		}
	}
	e.ch <- prometheus.MustNewConstHistogram(prometheus.NewDesc(name, help, names, nil), cum, float64(h.Usec)/1e6, buckets, values...)
}

// splitLabels splits name, value pairs into the names and the values.
func splitLabels(labels []string) (names, values []string) {
	for i := 0; i+1 < len(labels); i += 2 {
		names, values = append(names, labels[i]), append(values, labels[i+1])
	}
	return names, values
}

// emit sends one sample; labels are name, value pairs.
func (e emitter) emit(name, help string, t prometheus.ValueType, v float64, labels []string) {
	names, values := splitLabels(labels)
	e.ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, names, nil), t, v, values...)
}

func (s *Sources) cacheMetrics(e emitter) {
	st := s.Cache.Stats()
	for r, rs := range st.Regions {
		for _, c := range []struct {
			name, help string
			v          uint64
		}{
			{"hits", "gets answered from the cache", rs.Hits},
			{"misses", "gets not answered from the cache", rs.Misses},
			{"loads", "loads from the database", rs.Loads},
			{"merged_loads", "gets that joined a load in flight", rs.MergedLoads},
			{"puts", "loaded values cached", rs.Puts},
			{"refused_puts", "loaded values refused as possibly stale", rs.RefusedPuts},
			{"invalidations", "keys invalidated by writes on this node", rs.Invalidations},
		} {
			e.counter("shoal_l2_"+c.name+"_total", c.help, c.v, "region", r)
		}
	}
	n := st.Node
	e.counter("shoal_l2_invalidations_sent_total", "invalidation messages published", n.InvalidationsSent)
	e.counter("shoal_l2_invalidations_received_total", "invalidation messages received", n.InvalidationsReceived)
	e.counter("shoal_l2_missed_clears_total", "region clears after missed messages", n.MissedClears)
	e.counter("shoal_l2_remote_calls_total", "calls to other nodes (DISTRIBUTED owners and backups)", n.RemoteCalls)
	e.counter("shoal_l2_remote_bytes_total", "bytes of those calls, both ways", n.RemoteBytes)
	e.counter("shoal_l2_evictions_total", "DISTRIBUTED entries evicted for the budget", n.Evictions)
	e.counter("shoal_l2_exclusions_total", "members excluded from serving for not acknowledging a synchronous invalidation", n.Exclusions)
	e.counter("shoal_l2_lease_resets_total", "times this node dropped its cache on regaining its read lease", n.Resets)
	e.counter("shoal_l2_space_updates_retried_total", "query-space updates that failed to reach every member with their write and did when sent again", n.Retried)
	e.counter("shoal_l2_space_update_retry_drops_total", "query-space updates dropped from the retry queue at its bound", n.RetryDrops)
	e.counter("shoal_l2_stamp_folds_total", "times a bound of per-key or per-space stamps was reached and folded into a floor (--cache-max-invalidations)", n.StampFolds)
	for _, op := range l2cache.WriteOps() {
		if h, ok := n.WriteLatency[op]; ok {
			e.durations("shoal_l2_write_seconds", "the cache's part of a write on this node, by what it did (lock; change: an unlock or invalidation, with its query-space update; spaces: a query-space update alone)", h, "op", op)
		}
	}
	for _, w := range l2cache.OwnerWaits() {
		if h, ok := n.OwnerWait[w]; ok {
			e.durations("shoal_l2_owner_wait_seconds", "how long this node, as a partition's owner, waited after sending a change for its backups (or the key's near holders) to confirm it", h, "for", w)
		}
	}
	valid := 0.0
	if s.Lease.Valid() {
		valid = 1
	}
	e.gauge("shoal_l2_lease_valid", "1 while this node's read lease lets it serve cached state", valid)
	mode := s.Cache.ModeStatus()
	for _, m := range []string{"local", "distributed", "near"} {
		on := 0.0
		if m == mode.Mode {
			on = 1
		}
		e.gauge("shoal_l2_mode", "1 for the cache mode this node runs (or is switching to)", on, "mode", m)
	}
	e.gauge("shoal_l2_mode_epoch", "the epoch of the cache mode record this node has adopted", float64(mode.Epoch))
	switching := 0.0
	if mode.Phase != "stable" {
		switching = 1
	}
	e.gauge("shoal_l2_mode_switching", "1 while a switch of the cluster's cache mode is under way", switching)
}

func (s *Sources) packMetrics(e emitter) {
	if s.Packs == nil {
		return
	}
	st := s.Packs.Stats()
	for _, r := range []struct {
		result string
		v      uint64
	}{{"hit", st.Hits}, {"miss", st.Misses}, {"joined", st.Joined}, {"bypass", st.Bypasses}, {"rejected", st.Rejected}} {
		e.counter("shoal_pack_lookups_total", "upload-pack requests by result", r.v, "result", r.result)
	}
	for _, r := range []struct {
		result string
		v      uint64
	}{{"hit", st.LsRefsHits}, {"miss", st.LsRefsMisses}, {"joined", st.LsRefsJoined}} {
		e.counter("shoal_pack_ls_refs_lookups_total", "v2 ls-refs requests by result (also counted in shoal_pack_lookups_total)", r.v, "result", r.result)
	}
	e.counter("shoal_pack_bytes_from_cache_total", "bytes served from cache files", st.BytesFromCache)
	e.counter("shoal_pack_bytes_from_git_total", "bytes served while git ran", st.BytesFromGit)
	e.counter("shoal_pack_bytes_written_total", "bytes written to cache files", st.BytesWritten)
	e.counter("shoal_pack_git_started_total", "git upload-pack processes started", st.GitStarted)
	e.counter("shoal_pack_evictions_total", "entries evicted for space", st.Evictions)
	e.counter("shoal_pack_expired_total", "entries expired", st.Expired)
	e.counter("shoal_pack_dropped_total", "entries dropped by pushes", st.Dropped)
	e.counter("shoal_pack_pushes_total", "pushes recorded before git ran", st.Pushes)
	e.gauge("shoal_pack_entries", "published entries", float64(st.Entries))
	e.gauge("shoal_pack_bytes", "bytes of published entries", float64(st.Bytes))
}

func (s *Sources) frontMetrics(e emitter) {
	if s.Front == nil {
		return
	}
	st := s.Front.Stats()
	for _, p := range st.Pools {
		pool := string(p.Name)
		e.counter("shoal_pool_served_total", "requests served", p.Served, "pool", pool)
		e.counter("shoal_pool_rejected_total", "requests refused with 503 (pool and queue full)", p.Rejected, "pool", pool)
		e.counter("shoal_pool_timed_out_total", "requests that waited too long in the queue", p.TimedOut, "pool", pool)
		e.gauge("shoal_pool_in_flight", "requests running", float64(p.InFlight), "pool", pool)
		e.gauge("shoal_pool_queued", "requests waiting", float64(p.Queued), "pool", pool)
		e.gauge("shoal_pool_limit", "concurrency bound", float64(p.Concurrency), "pool", pool)
	}
	e.counter("shoal_auth_failures_total", "authentications refused for bad credentials (401)", st.Logins.Failures)
	e.counter("shoal_auth_throttled_total", "logins refused (429) after too many failures, by the bound that refused them", st.Logins.ThrottledAddr, "by", "address")
	e.counter("shoal_auth_throttled_total", "logins refused (429) after too many failures, by the bound that refused them", st.Logins.ThrottledUserAddr, "by", "user_address")
	e.counter("shoal_auth_throttled_total", "logins refused (429) after too many failures, by the bound that refused them", st.Logins.ThrottledUser, "by", "user")
	e.counter("shoal_auth_throttled_total", "logins refused (429) after too many failures, by the bound that refused them", st.Logins.ThrottledConcurrent, "by", "concurrent")
	e.counter("shoal_git_pushes_refused_total", "pushes refused because they could not be recorded in the store in time", st.Git.PushesRefused)
	e.counter("shoal_git_pushes_lost_total", "pushes whose git was killed when their marker could not be renewed", st.Git.PushesLost)
	e.counter("shoal_git_quarantines_swept_total", "stale push quarantine directories removed", st.Git.QuarantinesSwept)
	draining := 0.0
	if st.Draining {
		draining = 1
	}
	e.gauge("shoal_draining", "1 while the node drains", draining)
}

func (s *Sources) clusterMetrics(e emitter) {
	bs := s.Node.Bus().Stats()
	e.counter("shoal_bus_published_total", "bus messages published", bs.Published.Load())
	e.counter("shoal_bus_received_total", "bus messages received", bs.Received.Load())
	e.counter("shoal_bus_delivered_total", "bus messages delivered to subscribers", bs.Delivered.Load())
	e.counter("shoal_bus_missed_total", "missed-message reports", bs.MissedReports.Load())
	rs := s.Node.RPC().Stats()
	e.counter("shoal_rpc_calls_total", "peer RPC calls made", rs.Calls.Load())
	e.counter("shoal_rpc_call_errors_total", "peer RPC calls that failed", rs.CallErrors.Load())
	e.counter("shoal_rpc_served_total", "peer RPC requests served", rs.Served.Load())
	alive := 0
	for _, m := range s.Node.Members() {
		if m.State == cluster.StateAlive {
			alive++
		}
	}
	e.gauge("shoal_cluster_members_alive", "members this node sees alive", float64(alive))
	e.counter("shoal_cluster_member_failures_total", "members this node saw fail (declared dead by the failure detector)", s.Node.Failures())
	for _, c := range s.Node.Refusals().Snapshot() {
		e.counter("shoal_peer_refused_total", "peer traffic refused, by listener (rpc, raft, gossip, bus, keyring) and reason",
			c.Count, "listener", c.Listener, "reason", c.Reason)
	}
	e.gauge("shoal_gossip_keys", "gossip encryption keys installed (0: gossip is not encrypted)", float64(s.Node.GossipKeys()))
}
