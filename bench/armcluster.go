package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/internal/localcluster"
	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/internal/server"
)

// armCluster is one arm's running cluster, as processes or in process.
type armCluster interface {
	// Nodes says where each node runs.
	Nodes() []NodePlacement
	// Stop stops every node; safe twice.
	Stop()
}

// NodePlacement is where a node ran.
type NodePlacement struct {
	Name string `json:"name"`
	HTTP string `json:"http"`
	RPC  string `json:"rpc"`
	// PID is the node's process (the bench's own in process).
	PID int `json:"pid"`
	// Token is an administrator's access token, for the bench's reads of
	// the node's /v1 API.
	Token string `json:"-"`
}

// armConfig is what starting an arm's cluster needs.
type armConfig struct {
	arm          Arm
	dir, db      string
	token        string // an administrator's access token in db
	binary       string // empty: in process
	procs        int    // each node process's GOMAXPROCS; 0: the runtime's default
	invalidation string
	backups      int
	logger       *slog.Logger
}

// couplingWebPool is the nodes' REST pool: above the largest client count, so the
// experiment measures the cache and not the pool's queue.
const couplingWebPool = 1024

func startArm(ctx context.Context, c armConfig) (armCluster, error) {
	var ac armCluster
	var err error
	if c.binary == "" {
		ac, err = startInProcess(ctx, c)
	} else {
		ac, err = startProcesses(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	if err := waitServing(ctx, ac.Nodes(), c.arm); err != nil {
		ac.Stop()
		return nil, err
	}
	return ac, nil
}

// procCluster is an arm of 'shoal node' processes.
type procCluster struct {
	c     *localcluster.Cluster
	token string
}

func startProcesses(ctx context.Context, c armConfig) (armCluster, error) {
	lc, err := localcluster.Start(ctx, localcluster.Options{
		Binary: c.binary, N: c.arm.Nodes, Dir: c.dir, CacheMode: c.arm.Mode, LogLevel: "warn", Preset: "loopback",
		BootstrapExpect: c.arm.Nodes, WatchParent: true, ReadyTimeout: 90 * time.Second, Token: c.token,
		Args: []string{"--db", c.db, "--invalidation", c.invalidation, "--backups", strconv.Itoa(c.backups),
			"--pack-cache=false", "--pool-web", strconv.Itoa(couplingWebPool)},
		Command: func(_ int, name string, args ...string) *exec.Cmd {
			cmd := exec.Command(name, args...)
			if c.procs > 0 {
				cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(c.procs))
			}
			return cmd
		},
	})
	if err != nil {
		return nil, err
	}
	return &procCluster{c: lc, token: c.token}, nil
}

func (p *procCluster) Nodes() []NodePlacement {
	var out []NodePlacement
	for _, n := range p.c.Nodes() {
		out = append(out, NodePlacement{Name: n.Name, HTTP: n.HTTP, RPC: n.RPC, PID: n.PID, Token: p.token})
	}
	return out
}

func (p *procCluster) Stop() { p.c.Stop(15 * time.Second) }

// inProcCluster is an arm of server.Servers in this process.
type inProcCluster struct {
	servers []*server.Server
	token   string
}

func startInProcess(ctx context.Context, c armConfig) (armCluster, error) {
	ic := &inProcCluster{token: c.token}
	for i := 1; i <= c.arm.Nodes; i++ {
		s, err := startServer(c, i)
		if err != nil {
			ic.Stop()
			return nil, err
		}
		ic.servers = append(ic.servers, s)
		if i > 1 {
			if _, err := s.Node().Join(ctx, []string{ic.servers[0].Node().GossipAddr()}); err != nil {
				ic.Stop()
				return nil, fmt.Errorf("node%d joining: %w", i, err)
			}
		}
	}
	return ic, nil
}

func startServer(c armConfig, i int) (*server.Server, error) {
	cfg := server.DefaultNodeConfig(server.PresetLoopback)
	cc := &cfg.Cluster
	cc.Name, cc.BindAddr, cc.CacheMode = "node"+strconv.Itoa(i), "127.0.0.1:0", c.arm.Mode
	cfg.HTTPAddr, cfg.DataDir, cfg.DB.URL = "127.0.0.1:0", filepath.Join(c.dir, cc.Name), c.db
	cfg.Git.ReposDir = filepath.Join(c.dir, "repos")
	cfg.Store.BootstrapExpect = c.arm.Nodes
	cfg.Cache.Invalidation, cfg.Table.Backups = c.invalidation, c.backups
	cfg.PackCache = false
	cfg.Logger = c.logger
	cfg.Pools.Web.Concurrency = couplingWebPool
	return server.Start(cfg)
}

func (ic *inProcCluster) Nodes() []NodePlacement {
	var out []NodePlacement
	for _, s := range ic.servers {
		out = append(out, NodePlacement{Name: s.Node().Name(), HTTP: s.HTTPAddr(), RPC: s.Node().Self().RPC,
			PID: nodestats.ReadProcessStats().PID, Token: ic.token})
	}
	return out
}

func (ic *inProcCluster) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := len(ic.servers) - 1; i >= 0; i-- {
		ic.servers[i].Shutdown(ctx)
	}
	ic.servers = nil
}

// waitServing polls until every node is ready, sees every member alive
// and a raft leader, and, in DISTRIBUTED mode, uses a partition table
// spread over all of them. Each probe has its own deadline
// (probeTimeout), so that one stuck request does not use up the wait and
// the error names what the node last answered.
func waitServing(ctx context.Context, nodes []NodePlacement, arm Arm) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, n := range nodes {
		var last error
		for {
			pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
			last = nodeServing(pctx, n, arm)
			pcancel()
			if last == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s (%s) not serving: %w (last: %v)", n.Name, arm.Name(), ctx.Err(), last)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// probeTimeout bounds one readiness probe of waitServing.
const probeTimeout = 10 * time.Second

func nodeServing(ctx context.Context, n NodePlacement, arm Arm) error {
	if _, err := httpc.Do(ctx, http.MethodGet, n.HTTP, "/readyz", nil); err != nil {
		return err
	}
	v, err := localcluster.FetchView(ctx, n.HTTP, n.Token)
	if err != nil {
		return err
	}
	if alive := localcluster.CountState(v, "alive"); alive != arm.Nodes || v.Raft.Leader == "" {
		return fmt.Errorf("sees %d alive members, leader %q", alive, v.Raft.Leader)
	}
	if arm.Mode == cluster.CacheModeLocal {
		return nil
	}
	st, err := fetchStats(ctx, n)
	if err != nil {
		return err
	}
	if st.Partitions == nil || len(st.Partitions.Members) != arm.Nodes {
		return errors.New("partition table not spread over every node yet")
	}
	return nil
}

// fetchStats reads a node's /v1/stats, as an administrator (the
// process's memory is for administrators).
func fetchStats(ctx context.Context, n NodePlacement) (*nodestats.Stats, error) {
	body, err := httpc.DoToken(ctx, n.Token, http.MethodGet, n.HTTP, "/v1/stats", nil)
	if err != nil {
		return nil, err
	}
	var st nodestats.Stats
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("%s /v1/stats: %w", n.HTTP, err)
	}
	return &st, nil
}

// snapshot is every node's counters at one moment, and the kernel's count
// of bytes sent on the peer RPC connections.
type counterSnapshot struct {
	stats   []*nodestats.Stats
	sockets map[string]int64 // connection → bytes sent; nil: not available
	machine machineCPU
	// bench is the CPU time (seconds) of every process the benchmark
	// runs; benchOK is false where one could not be read (no /proc).
	bench   float64
	benchOK bool
	// db is the CPU time (seconds) of the database server the nodes
	// share (CouplingOptions.Postgres; part of bench), dbOK false where
	// there is none or it could not be read.
	db   float64
	dbOK bool
}

// takeSnapshot reads the nodes' counters and the machine's CPU time, and
// the CPU time of the benchmark's own processes: this one (the runner,
// and the children it reaped, such as ss), each node and the load
// generator (loadgenPID, 0 if in process), and the database server
// with its backends (dbPID, 0 if none).
func takeSnapshot(ctx context.Context, nodes []NodePlacement, loadgenPID, dbPID int) (counterSnapshot, error) {
	s := counterSnapshot{sockets: rpcSockets(ctx, nodes)}
	pids := []int{os.Getpid(), loadgenPID}
	for _, n := range nodes {
		pids = append(pids, n.PID)
	}
	s.readCPU(pids)
	if dbPID > 0 {
		var err error
		s.db, err = familyCPU(dbPID)
		s.dbOK = err == nil
		s.bench += s.db
		s.benchOK = s.benchOK && s.dbOK
	}
	for _, n := range nodes {
		st, err := fetchStats(ctx, n)
		if err != nil {
			return s, fmt.Errorf("%s: %w", n.Name, err)
		}
		s.stats = append(s.stats, st)
	}
	return s, nil
}

var bytesSentRE = regexp.MustCompile(`bytes_sent:(\d+)`)

// rpcSockets reads, from the kernel (ss -ti), bytes_sent of every
// established TCP connection end to or from the nodes' peer RPC ports,
// keyed by its local and peer addresses: both ends of each connection, so
// both directions. Nil if ss is missing.
func rpcSockets(ctx context.Context, nodes []NodePlacement) map[string]int64 {
	var filter []string
	for _, n := range nodes {
		_, port, err := net.SplitHostPort(n.RPC)
		if err != nil {
			return nil
		}
		filter = append(filter, "sport = :"+port, "dport = :"+port)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ss", "-tinH", "state", "established", "( "+strings.Join(filter, " or ")+" )")
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		return nil
	}
	return parseSS(string(out))
}

// parseSS reads ss -tinH output: a line per socket ("Recv-Q Send-Q local
// peer"), then indented lines with its TCP info.
func parseSS(out string) map[string]int64 {
	socks := map[string]int64{}
	key := ""
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			if f := strings.Fields(line); len(f) >= 4 {
				key = f[2] + " " + f[3]
				socks[key] = 0
			}
			continue
		}
		if m := bytesSentRE.FindStringSubmatch(line); m != nil && key != "" {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			socks[key] = n
		}
	}
	return socks
}

// socketDelta is the bytes sent between two readings: per connection end,
// the growth, or all of it for a connection opened in between (one closed
// in between is lost).
func socketDelta(before, after map[string]int64) int64 {
	if before == nil || after == nil {
		return -1
	}
	var total int64
	for k, b := range after {
		total += max(b-before[k], 0)
	}
	return total
}

// machineCPU is the whole machine's CPU time from /proc/stat, in ticks:
// busy (everything but idle and iowait; guest time is already in user),
// total, and irq (hardware and soft interrupts: the kernel's work that
// no process is charged for, such as handing loopback packets to their
// sockets), and steal (time the hypervisor gave another guest; in busy).
// Zero without /proc.
type machineCPU struct{ busy, total, irq, steal uint64 }

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return machineCPU{}
	}
	var m machineCPU
	for i, v := range f[1:] {
		if i >= 8 { // guest, guest_nice: counted in user and nice already
			break
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		m.total += n
		if i != 3 && i != 4 { // idle, iowait
			m.busy += n
		}
		if i == 5 || i == 6 { // irq, softirq
			m.irq += n
		}
		if i == 7 {
			m.steal = n
		}
	}
	return m
}

// readCPU reads the CPU time of pids and of the machine.
func (s *counterSnapshot) readCPU(pids []int) {
	s.bench, s.benchOK = treeCPU(pids)
	s.machine = readMachineCPU()
}

// treeCPU is the CPU time of pids (each once, 0s skipped) in seconds,
// their own and that of the children they waited for (readProcCPU).
func treeCPU(pids []int) (float64, bool) {
	var sum float64
	seen := map[int]bool{}
	for _, pid := range pids {
		if pid <= 0 || seen[pid] {
			continue
		}
		seen[pid] = true
		t, err := readProcCPU(pid)
		if err != nil {
			return 0, false
		}
		sum += t.total()
	}
	return sum, true
}

// shareOf is the share of the machine's CPU time between a and b that
// ticks are (/proc/stat's unit, clockTicks a second).
func shareOf(ticks float64, a, b machineCPU) float64 {
	if b.total <= a.total {
		return 0
	}
	return ticks / float64(b.total-a.total)
}

// busyShare is the share of the machine that was busy between a and b.
func busyShare(a, b machineCPU) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}

// loadAverage is the 1-minute load average (0 without /proc).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
