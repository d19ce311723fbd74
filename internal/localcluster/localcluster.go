// Package localcluster starts and stops clusters of real 'shoal node'
// processes on loopback. 'shoal up', the experiments and the multi-process
// tests share it.
package localcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/internal/server"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// Options says what cluster to start.
type Options struct {
	// Binary is the shoal executable.
	Binary string
	// N is the number of nodes, named node1..nodeN.
	N int
	// Dir holds one sub-directory per node (data, node.log, ready.json).
	Dir string
	// IP returns node i's (1-based) loopback address; nil: 127.0.0.1 for all.
	IP func(i int) string
	// BasePort: node i gossips on BasePort+10(i-1) and serves RPC on the
	// next port; HTTPBase: node i serves HTTP on HTTPBase+i-1. Zero: the
	// OS picks.
	BasePort, HTTPBase int
	// RESP: every node serves the Redis protocol, node i on
	// RESPBase+i-1 (RESPBase 0: the OS picks).
	RESP     bool
	RESPBase int
	// CacheMode, LogLevel and Preset are passed to every node.
	CacheMode, LogLevel, Preset string
	// BootstrapExpect is passed to every node (0: not passed).
	BootstrapExpect int
	// Args are extra flags for every node.
	Args []string
	// GossipKey, if set, is every node's gossip key (base64), passed in
	// the environment (SHOAL_GOSSIP_KEY), where other users cannot read
	// it, not among the arguments that ps shows.
	GossipKey string
	// GossipKeyFile, if set, is where GossipKey is kept (base64, 0600):
	// every start of a node rewrites it with the key the node is given,
	// so that it follows rotations.
	//
	// After a rotation ('shoal keyring') GossipKey is stale: each node
	// starts, and every restart, with the key in use among the nodes'
	// saved keyrings (the primary key of the keyring changed last, in
	// DATA-DIR/gossip.keyring) instead, so that a node whose data
	// directory holds no keyring yet (added, or started afresh) can join.
	// A node that has one uses its own anyway.
	GossipKeyFile string
	// TLSDir, if set, secures the peer RPC and raft with mutual TLS:
	// Start creates a CA in TLSDir unless it has one, and a certificate
	// for each node (NAME.pem, NAME-key.pem) unless it has one that is
	// valid for another 30 days, and starts every node with them.
	TLSDir string
	// WatchParent makes the nodes exit when this process dies.
	WatchParent bool
	// ReadyTimeout bounds start-up (default 60 s).
	ReadyTimeout time.Duration
	// KeepAddrs makes a restarted node bind the gossip, RPC and HTTP
	// addresses it had before (ports the OS picked at its first start
	// included), so clients and peers find it where it was.
	KeepAddrs bool
	// Token is an administrator's access token for the launcher's own
	// requests (WaitAlive's GET /v1/cluster). Empty: Start provisions one
	// (ProvisionAdminToken) for AdminUser in the cluster's database — the
	// --db in Args, else Dir/shoal.db, which the nodes share — and writes
	// it to Dir/admin-token.
	Token string
	// AdminUser is the administrator Start provisions a token for
	// (default "admin").
	AdminUser string
	// Command makes the command that runs node i (1-based): name with
	// args, for example inside a network namespace (netns.Host.Command).
	// It must run the program in the process it starts (exec, not a
	// child), so that signals reach the node. Nil: exec.Command.
	Command func(i int, name string, args ...string) *exec.Cmd
}

// Proc is one node process.
type Proc struct {
	Name    string `json:"name"`
	Gossip  string `json:"gossip"`
	RPC     string `json:"rpc"`
	HTTP    string `json:"http"`
	RESP    string `json:"resp,omitempty"`
	PID     int    `json:"pid"`
	DataDir string `json:"data_dir"`
	Log     string `json:"log"`

	index int
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	// logStart is the size of Log when the process started: its own
	// lines come after it.
	logStart int64
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitErr is the process's exit status once Done is closed.
func (p *Proc) ExitErr() error { <-p.done; return p.err }

// Cluster is a set of running node processes.
type Cluster struct {
	opts   Options
	mu     sync.Mutex
	nodes  []*Proc
	exited chan *Proc
	// raftPorts keeps each node's raft port when the OS picks ports, so a
	// restarted node is where the raft configuration says it is.
	raftPorts map[int]int
	// addrs keeps each node's first addresses (Options.KeepAddrs).
	addrs map[int]ready
}

// ready is what a node writes to its --ready-file.
type ready struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"`
	RPC    string `json:"rpc"`
	HTTP   string `json:"http"`
	RESP   string `json:"resp,omitempty"`
	Raft   string `json:"raft"`
	PID    int    `json:"pid"`
}

// Start starts the first node, then the others joining it, and waits until
// every node sees N alive members. On error, whatever started is stopped.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.N < 1 {
		return nil, fmt.Errorf("localcluster: %d nodes", opts.N)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	if opts.IP == nil {
		opts.IP = func(int) string { return "127.0.0.1" }
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	if opts.TLSDir != "" {
		if err := ProvisionTLS(opts.TLSDir, opts.N, opts.IP); err != nil {
			return nil, err
		}
	}
	if opts.Token == "" {
		if opts.AdminUser == "" {
			opts.AdminUser = "admin"
		}
		tok, err := ProvisionAdminToken(ctx, DBURL(opts.Dir, opts.Args), opts.Dir, opts.AdminUser)
		if err != nil {
			return nil, err
		}
		opts.Token = tok
	}
	c := &Cluster{opts: opts, exited: make(chan *Proc, 4*opts.N), raftPorts: map[int]int{}, addrs: map[int]ready{}}
	ctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	err := c.start(ctx)
	if err != nil {
		c.Stop(5 * time.Second)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	first, err := c.spawn(1, "")
	if err != nil {
		return err
	}
	if err := c.waitReady(ctx, first); err != nil {
		return err
	}
	for i := 2; i <= c.opts.N; i++ {
		if _, err := c.spawn(i, first.Gossip); err != nil {
			return err
		}
	}
	for _, p := range c.Nodes()[1:] {
		if err := c.waitReady(ctx, p); err != nil {
			return err
		}
	}
	return c.WaitAlive(ctx, c.opts.N)
}

// Token is the administrator's access token the launcher uses
// (Options.Token, or the one Start provisioned).
func (c *Cluster) Token() string { return c.opts.Token }

// ProvisionTLS makes dir a certificate directory for nodes node1..nodeN:
// a CA (created unless dir has one) and each node's certificate and key,
// issued unless the node has a certificate of that CA valid for another
// 30 days, naming the node, its address ip(i) and localhost.
func ProvisionTLS(dir string, n int, ip func(int) string) error {
	if _, err := os.Stat(filepath.Join(dir, tlsutil.CAFile)); errors.Is(err, os.ErrNotExist) {
		if err := tlsutil.InitCA(dir, tlsutil.CAOptions{Name: "shoal local cluster CA"}); err != nil {
			return err
		}
	}
	for i := 1; i <= n; i++ {
		name := "node" + strconv.Itoa(i)
		r, err := tlsutil.NewReloader(tlsutil.Config{Name: name, CAFile: filepath.Join(dir, tlsutil.CAFile),
			CertFile: filepath.Join(dir, tlsutil.CertFile(name)), KeyFile: filepath.Join(dir, tlsutil.KeyFile(name)),
			PollInterval: -1, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			cert, _ := r.Expiry()
			r.Close()
			if time.Until(cert) > 30*24*time.Hour {
				continue
			}
		}
		o := tlsutil.IssueOptions{DNS: []string{"localhost"}}
		if a := net.ParseIP(ip(i)); a != nil {
			o.IPs = []net.IP{a}
		}
		if _, err := tlsutil.Issue(dir, name, o); err != nil {
			return err
		}
	}
	return nil
}

// Nodes returns the processes, node1 first.
func (c *Cluster) Nodes() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Proc(nil), c.nodes...)
}

// Exited delivers each process that exits, expectedly or not (while up
// to 4N exits wait unread; later ones are dropped).
func (c *Cluster) Exited() <-chan *Proc { return c.exited }

func (c *Cluster) spawn(i int, join string) (*Proc, error) {
	name := "node" + strconv.Itoa(i)
	dir := filepath.Join(c.opts.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ip := c.opts.IP(i)
	port := func(base, off int) string {
		if base == 0 {
			return net.JoinHostPort(ip, "0")
		}
		return net.JoinHostPort(ip, strconv.Itoa(base+off))
	}
	gossip, rpc, httpAddr := port(c.opts.BasePort, 10*(i-1)), port(c.opts.BasePort, 10*(i-1)+1), port(c.opts.HTTPBase, i-1)
	respAddr := ""
	if c.opts.RESP {
		respAddr = port(c.opts.RESPBase, i-1)
	}
	c.mu.Lock()
	if a, ok := c.addrs[i]; ok && c.opts.KeepAddrs {
		gossip, rpc, httpAddr, respAddr = a.Gossip, a.RPC, a.HTTP, a.RESP
	}
	c.mu.Unlock()
	p := &Proc{Name: name, DataDir: dir, Log: filepath.Join(dir, "node.log"), index: i, done: make(chan struct{})}
	readyFile := filepath.Join(dir, "ready.json")
	os.Remove(readyFile)
	raftAddr, err := c.raftAddr(i, ip)
	if err != nil {
		return nil, err
	}
	// The node writes its log to node.log itself, rotated by size; its
	// standard output and error go to the same file, for what is written
	// before the log is open (a mistake in the flags).
	args := []string{"node", "--name", name, "--data-dir", dir,
		"--bind", gossip, "--rpc", rpc, "--raft", raftAddr, "--http", httpAddr, "--ready-file", readyFile, "--log-file", p.Log}
	if respAddr != "" {
		args = append(args, "--resp", respAddr)
	}
	if c.opts.BootstrapExpect > 0 {
		args = append(args, "--bootstrap-expect", strconv.Itoa(c.opts.BootstrapExpect))
	}
	for flag, v := range map[string]string{"--cache-mode": c.opts.CacheMode, "--log-level": c.opts.LogLevel, "--preset": c.opts.Preset} {
		if v != "" {
			args = append(args, flag, v)
		}
	}
	if c.opts.WatchParent {
		args = append(args, "--parent-pid", strconv.Itoa(os.Getpid()))
	}
	if join != "" {
		args = append(args, "--join", join)
	}
	if d := c.opts.TLSDir; d != "" {
		args = append(args, "--tls-ca", filepath.Join(d, tlsutil.CAFile),
			"--tls-cert", filepath.Join(d, tlsutil.CertFile(name)), "--tls-key", filepath.Join(d, tlsutil.KeyFile(name)))
	}
	args = append(args, c.opts.Args...)
	logFile, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child keeps its own descriptor
	if st, err := logFile.Stat(); err == nil {
		p.logStart = st.Size()
	}
	if c.opts.Command != nil {
		p.cmd = c.opts.Command(i, c.opts.Binary, args...)
	} else {
		p.cmd = exec.Command(c.opts.Binary, args...)
	}
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if c.opts.GossipKey != "" {
		key, err := c.gossipKey()
		if err != nil {
			return nil, err
		}
		if p.cmd.Env == nil {
			p.cmd.Env = os.Environ()
		}
		p.cmd.Env = append(p.cmd.Env, "SHOAL_GOSSIP_KEY="+key)
	}
	p.cmd.SysProcAttr = childProcAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.PID = p.cmd.Process.Pid
	c.mu.Lock()
	if i <= len(c.nodes) {
		c.nodes[i-1] = p
	} else {
		c.nodes = append(c.nodes, p)
	}
	c.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
		select { // nobody may be reading: never block on it
		case c.exited <- p:
		default:
		}
	}()
	return p, nil
}

// gossipKey is the key to give a node that starts: the primary key of
// the nodes' keyring that changed last, or Options.GossipKey if no node
// has one yet. It is written to Options.GossipKeyFile if that holds
// another.
func (c *Cluster) gossipKey() (string, error) {
	key := c.opts.GossipKey
	var newest time.Time
	for i := 1; i <= c.opts.N; i++ {
		path := filepath.Join(c.opts.Dir, fmt.Sprintf("node%d", i), server.KeyringFileName)
		st, err := os.Stat(path)
		if err != nil || !st.ModTime().After(newest) {
			continue
		}
		keys, err := cluster.ReadKeyringFile(path)
		if err != nil {
			continue // that node refuses to start with it, and says why
		}
		key, newest = cluster.EncodeGossipKey(keys[0]), st.ModTime()
	}
	if f := c.opts.GossipKeyFile; f != "" {
		if b, err := os.ReadFile(f); err != nil || strings.TrimSpace(string(b)) != key {
			if err := writeFileAtomic(f, []byte(key+"\n")); err != nil {
				return "", fmt.Errorf("localcluster: keeping the gossip key current: %w", err)
			}
		}
	}
	return key, nil
}

// writeFileAtomic replaces path with b (mode 0600) through a temporary
// file and a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// raftAddr is node i's raft address: BasePort+10(i-1)+2, or, when the OS
// picks ports, the port node i reported the first time it was ready (its
// raft configuration names it), or port 0 before that. The node binds
// port 0 itself: a port picked here and closed before the node binds it
// can be taken in between by any process's outgoing connection (CI saw
// "address already in use").
func (c *Cluster) raftAddr(i int, ip string) (string, error) {
	if c.opts.BasePort != 0 {
		return net.JoinHostPort(ip, strconv.Itoa(c.opts.BasePort+10*(i-1)+2)), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.raftPorts[i]; ok {
		return net.JoinHostPort(ip, strconv.Itoa(p)), nil
	}
	return net.JoinHostPort(ip, "0"), nil
}

// waitReady waits for a node's ready file, failing if the node exits first.
func (c *Cluster) waitReady(ctx context.Context, p *Proc) error {
	path := filepath.Join(p.DataDir, "ready.json")
	for {
		var r ready
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &r) == nil {
			p.Gossip, p.RPC, p.HTTP, p.RESP = r.Gossip, r.RPC, r.HTTP, r.RESP
			c.mu.Lock()
			if _, ok := c.addrs[p.index]; !ok {
				c.addrs[p.index] = r
			}
			if _, ok := c.raftPorts[p.index]; !ok && c.opts.BasePort == 0 {
				if _, port, err := net.SplitHostPort(r.Raft); err == nil {
					if n, err := strconv.Atoi(port); err == nil && n > 0 {
						c.raftPorts[p.index] = n
					}
				}
			}
			c.mu.Unlock()
			return nil
		}
		select {
		case <-p.done:
			return p.failure("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w; see %s", p.Name, ctx.Err(), p.Log)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitAlive polls every running node until each sees n alive members.
func (c *Cluster) WaitAlive(ctx context.Context, n int) error {
	for _, p := range c.Nodes() {
		if isDone(p.done) {
			continue
		}
		for {
			v, err := FetchView(ctx, p.HTTP, c.opts.Token)
			if err == nil && CountState(v, "alive") == n {
				break
			}
			select {
			case <-p.done:
				return p.failure("exited")
			case <-ctx.Done():
				return fmt.Errorf("%s does not see %d alive members: %w (last: %v)", p.Name, n, ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// Kill sends SIGKILL to node i (1-based) and waits for it to exit.
func (c *Cluster) Kill(i int) error {
	p := c.Nodes()[i-1]
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.done
	return nil
}

// Signal sends sig to node i.
func (c *Cluster) Signal(i int, sig os.Signal) error { return c.Nodes()[i-1].cmd.Process.Signal(sig) }

// Pause stops node i with SIGSTOP: it keeps its sockets but answers
// nothing until Resume.
func (c *Cluster) Pause(i int) error { return c.Signal(i, syscall.SIGSTOP) }

// Resume continues node i after Pause (SIGCONT).
func (c *Cluster) Resume(i int) error { return c.Signal(i, syscall.SIGCONT) }

// RestartAll starts every node again after all have exited (killed or
// stopped), from the same directories, as Start does, and waits until
// every node sees N alive members.
func (c *Cluster) RestartAll(ctx context.Context) error {
	for _, p := range c.Nodes() {
		if !isDone(p.done) {
			return fmt.Errorf("localcluster: %s is still running", p.Name)
		}
	}
	return c.start(ctx)
}

// Restart starts node i again (after it exited) with the same directory,
// joining node j (0: joining none, for a cluster of one), and waits until
// it is ready.
func (c *Cluster) Restart(ctx context.Context, i, j int) (*Proc, error) {
	seed := ""
	if j > 0 {
		seed = c.Nodes()[j-1].Gossip
	}
	return c.restart(ctx, i, seed)
}

// RestartJoin starts node i again (after it exited) with the same
// directory, joining the gossip address join ("": joining none), and
// waits until it is ready. It returns the new process even when it is
// not ready.
func (c *Cluster) RestartJoin(ctx context.Context, i int, join string) (*Proc, error) {
	return c.restart(ctx, i, join)
}

// restart starts node i again and waits until it is ready. With ports the
// OS picks (BasePort 0), a restarted node reuses the raft port it had (its
// peers know it) but binds its other listeners to port 0, its HTTP
// listener before raft's, and the OS may hand one of them that very port:
// the node exits with its raft address in use (make test saw it once, in
// TestDataDirInUseAndDamagedLog). Such a start is tried again, up to three
// times in all; the next start's port-0 listeners land elsewhere. Any
// other failure, or the raft port still taken, is returned.
func (c *Cluster) restart(ctx context.Context, i int, join string) (*Proc, error) {
	for attempt := 1; ; attempt++ {
		p, err := c.spawn(i, join)
		if err != nil {
			return nil, err
		}
		err = c.waitReady(ctx, p)
		if err == nil || attempt == 3 || ctx.Err() != nil || c.opts.BasePort != 0 || !c.raftPortTaken(i, p) {
			return p, err
		}
	}
}

// raftPortTaken reports whether p, node i's process, exited because the
// raft address it was given was in use.
func (c *Cluster) raftPortTaken(i int, p *Proc) bool {
	want, err := c.raftAddr(i, c.opts.IP(i))
	if err != nil {
		return false
	}
	for _, l := range p.OwnLines() {
		if m := addrInUse.FindStringSubmatch(l); m != nil && m[1] == want {
			return true
		}
	}
	return false
}

// StopNode asks node i to leave (SIGTERM), waits up to grace, then kills
// it if it is still running.
func (c *Cluster) StopNode(i int, grace time.Duration) { stopProc(c.Nodes()[i-1], grace) }

// Stop asks every node to leave (SIGTERM), waits up to grace, then kills
// what is left. Safe to call twice.
func (c *Cluster) Stop(grace time.Duration) {
	var wg sync.WaitGroup
	for _, p := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopProc(p, grace)
		}()
	}
	wg.Wait()
}

func stopProc(p *Proc, grace time.Duration) {
	if isDone(p.done) {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.cmd.Process.Kill()
	}
	p.cmd.Process.Signal(syscall.SIGCONT) // a paused node acts on SIGTERM only once continued
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.done
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// FetchView asks a node's HTTP address for its view of the cluster, with
// an access token (an administrator's to see the members' addresses).
func FetchView(ctx context.Context, httpAddr, token string) (*server.ClusterView, error) {
	body, err := httpc.DoToken(ctx, token, http.MethodGet, httpAddr, "/v1/cluster", nil)
	if err != nil {
		return nil, err
	}
	var v server.ClusterView
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("%s: unreadable answer: %w", httpAddr, err)
	}
	return &v, nil
}

// CountState counts the members of a view in the given state.
func CountState(v *server.ClusterView, state string) int {
	n := 0
	for _, m := range v.Members {
		if m.State == state {
			n++
		}
	}
	return n
}

// StateOf is the state of the named member in a view, or "" if absent.
func StateOf(v *server.ClusterView, name string) string {
	for _, m := range v.Members {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// Tail returns the last n lines of a file, for error messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
