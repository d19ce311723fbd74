// Package nodestats reads a node's counters — the L2 cache, the partition
// table, the bus, the peer RPC, the pack cache, the front's pools and the
// process — and serves them: as JSON at GET /v1/stats (Handler), as
// Prometheus metrics at /metrics (MetricsHandler), and summed over the
// cluster by the stats.rollup job (Rollup), which writes the sum to the
// consistent store for GET /rest/api/1.0/admin/cluster-stats
// (ClusterStatsHandler).
package nodestats

import (
	"bufio"
	"encoding/json"
	"github.com/shoal-dev/shoal/internal/cpupin"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/dmap"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/tlsutil"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/packcache"
	"github.com/shoal-dev/shoal/resp"
)

// Sources are what a node's counters are read from. Node, Cache and Lease
// are needed; the others are optional: Keeper (no partition table), Packs
// (the pack cache is off), Front (not started yet).
type Sources struct {
	Node   *cluster.Node
	Cache  *l2cache.Cache
	Keeper *l2cache.TableKeeper
	Lease  *l2cache.ReadLease
	Packs  *packcache.Cache
	Front  *gitfront.Front
	// TLS is the node's certificates (nil without TLS).
	TLS *tlsutil.Reloader
	// Maps is the node's part of the named maps; RESP its Redis protocol
	// endpoint (nil when off).
	Maps *dmap.DMap
	RESP *resp.Server
}

// Stats is the JSON of GET /v1/stats: the node's counters as numbers, the
// same ones /metrics exports, plus what the process costs. The coupling
// benchmark reads it before and after each stage and takes differences.
type Stats struct {
	Node      string `json:"node"`
	CacheMode string `json:"cache_mode"`
	// Cache is the L2 cache's l2cache.Stats.
	Cache l2cache.Stats `json:"cache"`
	// Partitions is the DISTRIBUTED partition table this node uses (nil
	// in LOCAL mode or before the first table arrives).
	Partitions *PartitionStats `json:"partitions,omitempty"`
	Bus        BusCounters     `json:"bus"`
	RPC        RPCCounters     `json:"rpc"`
	// Process is for administrators (left out for other users).
	Process ProcessStats `json:"process,omitzero"`
}

// PartitionStats summarises a partition table.
type PartitionStats struct {
	Epoch uint64 `json:"epoch"`
	// Members are the nodes that own or back up at least one partition.
	Members []string `json:"members"`
}

// BusCounters are cluster.BusStats as numbers.
type BusCounters struct {
	Published     uint64 `json:"published"`
	PublishedSync uint64 `json:"published_sync"`
	SendErrors    uint64 `json:"send_errors"`
	Received      uint64 `json:"received"`
	Delivered     uint64 `json:"delivered"`
	Duplicates    uint64 `json:"duplicates"`
	MissedReports uint64 `json:"missed_reports"`
}

// RPCCounters are rpc.Stats as numbers. Calls and NotifySent are the
// messages this node sent to its peers (requests and one-way notes).
type RPCCounters struct {
	Calls          uint64 `json:"calls"`
	CallErrors     uint64 `json:"call_errors"`
	Served         uint64 `json:"served"`
	NotifySent     uint64 `json:"notify_sent"`
	NotifyReceived uint64 `json:"notify_received"`
}

// ProcessStats is what the node's process has used so far. In a process
// holding several nodes (tests, in-process benchmarks) they share it.
type ProcessStats struct {
	PID int `json:"pid"`
	// CPUSeconds is user plus system time (getrusage).
	CPUSeconds float64 `json:"cpu_seconds"`
	// RSSBytes and PeakRSSBytes are VmRSS and VmHWM from
	// /proc/self/status (zero where there is no /proc).
	RSSBytes     uint64 `json:"rss_bytes"`
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	Goroutines   int    `json:"goroutines"`
	// GOMAXPROCS is the processors the process runs Go code on now (the
	// idle governor of 'shoal node' lowers it to 1 while idle).
	GOMAXPROCS int `json:"gomaxprocs"`
	// CPUs is the list of CPUs the process may run on ("0-1"), as its
	// reading thread sees it; empty where that cannot be read.
	CPUs string `json:"cpus,omitempty"`
	// Started is when the process started (when this package was
	// initialised, to the millisecond).
	Started time.Time `json:"started,omitzero"`
}

// processStarted is the process's start, near enough.
var processStarted = time.Now().UTC().Truncate(time.Millisecond)

// Handler serves GET /v1/stats: Read as JSON, without Process (the PID
// and memory) unless admin says the caller is an administrator (nil: no
// caller is). src is read at each request, so it may be filled after the
// handler is made.
func Handler(src *Sources, admin func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := src.Read()
		if admin == nil || !admin(r) {
			st.Process = ProcessStats{}
		}
		writeJSON(w, http.StatusOK, st)
	})
}

// Read reads the node's counters.
func (src *Sources) Read() Stats {
	st := Stats{Node: src.Node.Name(), CacheMode: src.Cache.Mode(), Cache: src.Cache.Stats(), Process: ReadProcessStats()}
	if src.Keeper != nil {
		if t := src.Keeper.Table(); t != nil {
			st.Partitions = &PartitionStats{Epoch: t.Epoch, Members: tableMembers(t)}
		}
	}
	bs := src.Node.Bus().Stats()
	st.Bus = BusCounters{Published: bs.Published.Load(), PublishedSync: bs.PublishedSync.Load(), SendErrors: bs.SendErrors.Load(),
		Received: bs.Received.Load(), Delivered: bs.Delivered.Load(), Duplicates: bs.Duplicates.Load(), MissedReports: bs.MissedReports.Load()}
	rs := src.Node.RPC().Stats()
	st.RPC = RPCCounters{Calls: rs.Calls.Load(), CallErrors: rs.CallErrors.Load(), Served: rs.Served.Load(),
		NotifySent: rs.NotifySent.Load(), NotifyReceived: rs.NotifyReceived.Load()}
	return st
}

func tableMembers(t *l2cache.PartitionTable) []string {
	var out []string
	for _, rs := range t.Replicas {
		for _, m := range rs {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// ReadProcessStats reads this process's CPU time and memory.
func ReadProcessStats() ProcessStats {
	p := ProcessStats{PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), GOMAXPROCS: runtime.GOMAXPROCS(0), Started: processStarted}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		p.CPUSeconds = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	p.RSSBytes, p.PeakRSSBytes = readVM("/proc/self/status")
	if cpus, err := cpupin.Available(); err == nil {
		p.CPUs = cpupin.String(cpus)
	}
	return p
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// readVM returns VmRSS and VmHWM (kB in the file) in bytes.
func readVM(path string) (rss, peak uint64) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			continue
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
