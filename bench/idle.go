package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// IdleOptions configures the idle experiment.
type IdleOptions struct {
	// Binary is the shoal executable.
	Binary string
	// N is the cluster size.
	N int
	// Preset is the nodes' tuning: "loopback" or "lan".
	Preset string
	// Duration is how long the idle cluster is watched.
	Duration time.Duration
	// Burners is how many CPU-bound processes ('yes > /dev/null') run
	// beside the cluster while it is watched (0: none).
	Burners int
	// Sample is the interval between two looks at every node's raft state
	// (default 2 s; each look is one HTTP request per node).
	Sample time.Duration
	// Dir is a scratch directory.
	Dir string
	// Args are extra flags for every node.
	Args []string
	// Progress, if set, is told after every sample.
	Progress func(elapsed time.Duration, term uint64, leader string)
	// Profile, if set, receives a CPU profile of node ProfileNode (1-based;
	// default 1) over the watched duration, from its /debug/pprof/profile
	// (as the launcher's administrator).
	Profile     io.Writer
	ProfileNode int
}

// IdleResult is what the idle experiment saw.
type IdleResult struct {
	Preset   string        `json:"preset"`
	N        int           `json:"n"`
	Burners  int           `json:"burners"`
	Duration time.Duration `json:"duration_ns"`
	// FirstTerm and LastTerm are the highest raft term any node reported
	// at the first and the last sample.
	FirstTerm, LastTerm uint64
	// LeaderChanges counts the samples whose leader (as the node with the
	// highest term saw it) differs from the previous sample's;
	// Leaderless counts samples at which no node knew a leader.
	LeaderChanges, Leaderless, Samples int
	// Leader is the raft leader at the last sample that knew one.
	Leader string
	// NotAlive counts the samples at which some node saw a member that
	// was not alive (suspect or failed): membership flapping.
	NotAlive int
	// CPU is each node's CPU time (user+system) over Duration, from
	// /proc/PID/stat; nil where /proc is not available.
	CPU map[string]time.Duration `json:"cpu_ns"`
	// Wakeups is each node's voluntary context switches over Duration
	// (all its threads, /proc/PID/task/*/status): how often it went to
	// sleep and was woken, which unlike CPU time does not grow with the
	// machine's load. Nil where /proc is not available.
	Wakeups map[string]uint64 `json:"wakeups"`
}

// WakeupsPerSecond is node name's voluntary context switches a second
// over the watched duration (-1 if unknown).
func (r *IdleResult) WakeupsPerSecond(name string) float64 {
	n, ok := r.Wakeups[name]
	if !ok || r.Duration <= 0 {
		return -1
	}
	return float64(n) / r.Duration.Seconds()
}

// TermGrowth is how far the raft term moved while the cluster was idle.
func (r *IdleResult) TermGrowth() uint64 { return r.LastTerm - r.FirstTerm }

// CPUPercent is node name's CPU time as a percentage of one core over
// the watched duration (-1 if unknown).
func (r *IdleResult) CPUPercent(name string) float64 {
	d, ok := r.CPU[name]
	if !ok || r.Duration <= 0 {
		return -1
	}
	return 100 * float64(d) / float64(r.Duration)
}

// Idle starts an N-node cluster, waits until it has a leader, starts the
// burners, and then watches the idle cluster for o.Duration: the raft
// term and leader every o.Sample, and each node's CPU time from its
// first to its last sample. It stops the burners (by PID) and the
// cluster before it returns.
func Idle(ctx context.Context, o IdleOptions) (*IdleResult, error) {
	if o.N < 1 || o.Duration <= 0 || o.Burners < 0 {
		return nil, fmt.Errorf("idle: need N ≥ 1, a positive duration and burners ≥ 0")
	}
	if o.Sample <= 0 {
		o.Sample = 2 * time.Second
	}
	lo := localcluster.Options{Binary: o.Binary, N: o.N, Preset: o.Preset, LogLevel: "warn", WatchParent: true,
		BootstrapExpect: o.N, Dir: filepath.Join(o.Dir, "idle-"+o.Preset), Args: o.Args}
	os.RemoveAll(lo.Dir)
	c, err := localcluster.Start(ctx, lo)
	if err != nil {
		return nil, err
	}
	defer c.Stop(10 * time.Second)
	if err := waitAgreedLeader(ctx, c, time.Minute); err != nil {
		return nil, err
	}
	burners, err := startBurners(o.Burners)
	defer stopBurners(burners)
	if err != nil {
		return nil, err
	}
	res := &IdleResult{Preset: o.Preset, N: o.N, Burners: o.Burners}
	nodes := c.Nodes()
	cpu0 := map[string]time.Duration{}
	sw0 := map[string]uint64{}
	for _, p := range nodes {
		if d, err := ProcCPU(p.PID); err == nil {
			cpu0[p.Name] = d
		}
		if n, err := ProcSwitches(p.PID); err == nil {
			sw0[p.Name] = n
		}
	}
	start := time.Now()
	profErr := make(chan error, 1)
	if o.Profile != nil {
		i := o.ProfileNode
		if i < 1 || i > len(nodes) {
			i = 1
		}
		secs := int((o.Duration + time.Second - 1) / time.Second)
		go func() {
			pctx, cancel := context.WithTimeout(ctx, o.Duration+time.Minute)
			defer cancel()
			b, err := httpc.DoToken(pctx, c.Token(), "GET", nodes[i-1].HTTP, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), nil)
			if err == nil {
				_, err = o.Profile.Write(b)
			}
			profErr <- err
		}()
	}
	prevLeader := ""
	t := time.NewTicker(o.Sample)
	defer t.Stop()
	for {
		term, leader, notAlive := 0, "", false
		for _, p := range nodes {
			if isClosed(p.Done()) {
				return res, fmt.Errorf("idle: %s exited (%v); see %s", p.Name, p.ExitErr(), p.Log)
			}
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			v, err := localcluster.FetchView(sctx, p.HTTP, c.Token())
			cancel()
			if err == nil && localcluster.CountState(v, "alive") != o.N {
				notAlive = true
			}
			if err == nil && int(v.Raft.Term) >= term {
				if int(v.Raft.Term) > term || leader == "" {
					leader = v.Raft.Leader
				}
				term = int(v.Raft.Term)
			}
		}
		if res.Samples == 0 {
			res.FirstTerm = uint64(term)
		}
		res.LastTerm = uint64(term)
		res.Samples++
		if notAlive {
			res.NotAlive++
		}
		if leader == "" {
			res.Leaderless++
		} else {
			if prevLeader != "" && leader != prevLeader {
				res.LeaderChanges++
			}
			prevLeader, res.Leader = leader, leader
		}
		elapsed := time.Since(start)
		if o.Progress != nil {
			o.Progress(elapsed, uint64(term), leader)
		}
		if elapsed >= o.Duration {
			res.Duration = elapsed
			break
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-t.C:
		}
	}
	res.CPU, res.Wakeups = map[string]time.Duration{}, map[string]uint64{}
	for _, p := range nodes {
		if n, err := ProcSwitches(p.PID); err == nil {
			if n0, ok := sw0[p.Name]; ok && n >= n0 {
				res.Wakeups[p.Name] = n - n0
			}
		}
		if d, err := ProcCPU(p.PID); err == nil {
			if d0, ok := cpu0[p.Name]; ok {
				res.CPU[p.Name] = d - d0
			}
		}
	}
	if o.Profile != nil {
		select {
		case err := <-profErr:
			if err != nil {
				return res, fmt.Errorf("idle: CPU profile: %w", err)
			}
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	return res, nil
}

// waitAgreedLeader waits until every node knows the same raft leader.
func waitAgreedLeader(ctx context.Context, c *localcluster.Cluster, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		leader, agree := "", true
		for _, p := range c.Nodes() {
			v, err := localcluster.FetchView(ctx, p.HTTP, c.Token())
			if err != nil || v.Raft.Leader == "" || (leader != "" && v.Raft.Leader != leader) {
				agree = false
				break
			}
			leader = v.Raft.Leader
		}
		if agree {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("idle: no agreed raft leader: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startBurners starts n 'yes' processes writing to /dev/null: each keeps
// one core busy. Whatever started is returned even on error.
func startBurners(n int) ([]*exec.Cmd, error) {
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("yes")
		// Stdout nil: os/exec connects it to /dev/null.
		if err := cmd.Start(); err != nil {
			return cmds, fmt.Errorf("starting a CPU burner ('yes'): %w", err)
		}
		cmds = append(cmds, cmd)
	}
	return cmds, nil
}

// stopBurners kills the burners it started, by PID, and reaps them.
func stopBurners(cmds []*exec.Cmd) {
	for _, c := range cmds {
		c.Process.Kill()
		c.Wait()
	}
}

// ProcCPU is a process's CPU time so far (user + system), from
// /proc/PID/stat (Linux; an error elsewhere).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable /proc stat times")
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(ut+st) * (time.Second / 100), nil
}

// ProcSwitches is the voluntary context switches of process pid's
// threads so far (threads that have exited are not counted), from
// /proc/PID/task/*/status.
func ProcSwitches(pid int) (uint64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/status")
		if err != nil {
			continue // the thread exited meanwhile
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("unreadable %s/%s/status: %w", dir, t.Name(), err)
				}
				total += n
			}
		}
	}
	return total, nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
