package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/beat"
	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/logfile"
	"github.com/shoal-dev/shoal/internal/server"
)

// nodeSettings are those of 'shoal node': the node's configuration, and
// what the process does around it.
type nodeSettings struct {
	server.Config
	join        []string
	joinTimeout time.Duration
	readyFile   string
	parentPID   int
	logLevel    slog.Level
	logFile     string
	logFormat   string
	logMaxSize  int64
	logBackups  int
	printConfig bool
	insecure    bool
	idleProcs   bool
}

func init() {
	register(&command{name: "node", summary: "Run one node of a cluster.", bind: bindNode})
}

func bindNode(s *cli.Set) runFunc {
	n := &nodeSettings{Config: server.DefaultNodeConfig(server.PresetAuto), logFormat: "text",
		logMaxSize: logfile.DefaultMaxSize, logBackups: 5, idleProcs: true}
	n.bind(s)
	return func(ctx context.Context, sio stdio, _ []string) error { return n.run(ctx, s, sio) }
}

// bind binds every setting of a node to its flag: the place, with the
// field in its package's Config, where a node setting is written.
func (n *nodeSettings) bind(s *cli.Set) {
	c := &n.Config
	s.String(&c.Cluster.Name, "name", "node name, unique in the cluster").Doc("the host's name")
	s.String(&c.Cluster.BindAddr, "bind", "gossip address host:port (UDP and TCP; port 0 picks one)")
	s.String(&c.Cluster.AdvertiseAddr, "advertise", "gossip address other nodes should use, if not --bind")
	s.Var(gossipKeyValue{&c.Cluster.GossipKey}, &c.Cluster.GossipKey, "gossip-key", "key",
		"encrypt gossip with this key, base64 of 16, 24 or 32 bytes ('shoal keyring generate'): nodes without it cannot join. "+
			"Kept in DATA-DIR/"+server.KeyringFileName+" (rotate with 'shoal keyring'), which wins once it exists")
	s.Bool(&n.insecure, "insecure", "allow addresses beyond loopback without gossip encryption or without mutual TLS between the nodes")
	s.String(&c.Cluster.RPCAddr, "rpc", "peer RPC address host:port").Doc("`--bind`'s host, port + 1")
	s.String(&c.HTTPAddr, "http", "HTTP address host:port")
	s.String(&c.HTTP.TLS.CertFile, "http-tls-cert", "serve HTTPS on --http with this certificate (PEM; a new one written over it is picked up within a second)")
	s.String(&c.HTTP.TLS.KeyFile, "http-tls-key", "the private key (PEM) of --http-tls-cert")
	s.String(&c.RaftAddr, "raft", "raft address host:port; keep it stable across restarts").Doc("`--bind`'s host, port + 2")
	s.String(&c.RaftAdvertise, "raft-advertise", "raft address other nodes should use, if not --raft")
	s.String(&c.TLS.CAFile, "tls-ca", "the cluster's CA certificate (PEM, 'shoal tls init'): with --tls-cert and --tls-key, the peer RPC and raft run over mutual TLS and only nodes with a certificate it signed are heard")
	s.String(&c.TLS.CertFile, "tls-cert", "this node's certificate (PEM, 'shoal tls issue NAME'), naming it; reloaded when the file changes")
	s.String(&c.TLS.KeyFile, "tls-key", "this node's private key (PEM); reloaded with --tls-cert")
	s.Int(&c.Store.BootstrapExpect, "bootstrap-expect", "form a new raft group once this many nodes are alive (give every node of a new cluster the same number; 0: join an existing group)")
	s.Int(&c.Store.MaxVoters, "voters", "raft voters at most: 1, 3, 5 or 7")
	s.List(&n.join, "join", "gossip address of a node to join, host:port (repeatable; comma-separated in $SHOAL_JOIN); a DNS name stands for every address it has and is resolved again at each attempt, and every ReconnectInterval while the node runs (a Kubernetes headless Service's name)")
	s.Duration(&n.joinTimeout, "join-timeout", "give up joining after this long (0: keep trying)")
	s.String(&c.DataDir, "data-dir", "this node's own data directory (raft, pack cache)").Doc("`shoal-data/NAME`")
	s.String(&c.Preset, "preset", "gossip and raft timing: lan, loopback, or auto (loopback when --bind is a loopback address)")
	s.Var(levelValue{&n.logLevel}, &n.logLevel, "log-level", "level", "debug, info, warn or error")
	s.String(&n.logFile, "log-file", "write the log to this file, rotated by size, instead of standard error; a panic lands in it too")
	s.String(&n.logFormat, "log-format", "text (key=value) or json (one object a line)")
	s.Size(&n.logMaxSize, "log-max-size", "rotate --log-file when it would grow past this size")
	s.Int(&n.logBackups, "log-max-backups", "rotated log files kept (FILE.1 the newest); 0 keeps none")
	s.String(&c.DB.URL, "db", "the domain database: a SQLite file or a postgres:// URL").Doc("`shoal.db` beside `--data-dir`")
	s.Duration(&c.DB.ConnMaxLifetime, "db-conn-max-lifetime", "replace pooled database connections after this long; with SQLite it bounds how long a connection keeps using a file that was moved away")
	s.String(&c.Git.ReposDir, "repos-dir", "the bare git repositories, shared by the nodes").Doc("`repos` beside `--data-dir`")
	s.String(&c.Cluster.CacheMode, "cache-mode", "L2 cache coupling the node proposes: local, distributed or near (a running cluster keeps its own mode; switch it with shoal cache switch)")
	s.String(&c.Cache.Invalidation, "invalidation", "L2 invalidation: async, or sync (a write returns once every live member has applied it)")
	s.Int(&c.Table.Backups, "backups", "DISTRIBUTED mode: synchronous backups of each partition, 0 to 2")
	s.Size(&c.Cache.MaxCost, "cache-max-bytes", "L2 cache size on this node")
	s.Duration(&c.Cache.TTL, "cache-ttl", "expire L2 entries this long after they are cached (0: never)")
	s.Int(&c.Cache.MaxInvalidations, "cache-max-invalidations", "per-key invalidation stamps an L2 region keeps (and query-space stamps a node keeps, and an owner over its partitions) before they fold into one floor, which drops what it covers")
	s.Duration(&c.Lease.Duration, "cache-lease", "read lease: how long a node serves cached state after it last confirmed no write excluded it (the most a member that stops answering adds to a write)")
	s.Bool(&c.PackCache, "pack-cache", "serve repeated clones from the pack cache")
	s.String(&c.Packs.Dir, "pack-cache-dir", "this node's own pack cache directory").Doc("`DATA-DIR/packcache`")
	s.Size(&c.Packs.MaxBytes, "pack-cache-max-bytes", "pack cache disk budget")
	s.USize(&c.Packs.MinFree, "pack-cache-min-free", "below this much free disk the pack cache steps aside (0: no floor)")
	s.Duration(&c.Packs.TTL, "pack-cache-ttl", "how long a pack cache entry may be served")
	s.Bool(&c.RefAdvertCache, "ref-advert-cache", "cache ref advertisements (info/refs, and v2 ls-refs in the pack cache) per repository generation")
	s.Int(&c.Pools.Upload.Concurrency, "pool-upload", "concurrent git upload-pack requests").Doc("1.5 × cores")
	s.Int(&c.Pools.Receive.Concurrency, "pool-receive", "concurrent git receive-pack requests").Doc("cores")
	s.Int(&c.Pools.Web.Concurrency, "pool-web", "concurrent web and REST requests")
	s.Duration(&c.Pools.Web.QueueTimeout, "pool-web-queue-timeout", "how long a web or REST request waits for a --pool-web slot before it is answered 503 with Retry-After")
	s.Duration(&c.HTTP.Body.Grace, "http-body-grace", "how long a request body may take before --http-body-min-rate applies")
	s.Int64(&c.HTTP.Body.MinRate, "http-body-min-rate", "bytes per second a request body must keep up after the grace period (else 408)")
	s.Int(&c.HTTP.MaxConnsPerClient, "http-max-conns-per-client", "open HTTP connections from one client address (negative: no bound)")
	s.Duration(&c.HTTP.IdleTimeout, "http-idle-timeout", "close a keep-alive HTTP connection idle this long")
	s.Bool(&c.HTTP.MetricsAuth, "metrics-auth", "require a user's credentials for /metrics (an access token, sent as a Bearer token: Prometheus's authorization.credentials_file)")
	s.Duration(&c.Scheduler.APIMinInterval, "jobs-min-interval", "the shortest time between fire times of a job scheduled through /v1/jobs")
	s.Var(loginLimitValue{&c.HTTP.Logins.Addr}, &c.HTTP.Logins.Addr, "login-limit-addr", "limit", "failed logins per client address: BURST/PERIOD, refilled at BURST per PERIOD, past which logins get 429 (0: no bound)")
	s.Var(loginLimitValue{&c.HTTP.Logins.UserAddr}, &c.HTTP.Logins.UserAddr, "login-limit-user-addr", "limit", "failed logins per username and client address, as --login-limit-addr")
	s.Var(loginLimitValue{&c.HTTP.Logins.User}, &c.HTTP.Logins.User, "login-limit-user", "limit", "failed logins per username from all addresses, as --login-limit-addr; past it only the addresses that failed for that user get 429")
	s.String(&c.RESP.Addr, "resp", "Redis protocol (RESP2/RESP3) address host:port over the named maps (empty: off)")
	s.Bool(&c.RESP.Anonymous, "resp-anonymous", "let RESP clients run commands without AUTH")
	s.String(&c.RESP.Redirect, "resp-redirect", "which RESP connections are answered MOVED instead of forwarded: auto (those that asked for the slot map: CLUSTER SLOTS/SHARDS/NODES, READONLY), always, never")
	s.Size(&c.Maps.MaxBytes, "maps-max-bytes", "what this node holds of the named maps, as owner and backup; past it random keys are evicted").Doc("64MiB")
	s.String(&n.readyFile, "ready-file", "write the node's addresses as JSON here once it serves")
	s.Int(&n.parentPID, "parent-pid", "shut down gracefully when this parent process goes away (set by 'shoal up')")
	s.Bool(&n.idleProcs, "idle-procs", "run on one processor (GOMAXPROCS 1) while the node is idle (under 5 % of a core for 10 s), back on every core within a second of work; off when GOMAXPROCS is set")
	s.Bool(&n.printConfig, "print-config", "print the effective configuration, with where each value came from, and exit").Local()
}

// readyInfo is written to --ready-file.
type readyInfo struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"`
	RPC    string `json:"rpc"`
	HTTP   string `json:"http"`
	RESP   string `json:"resp,omitempty"`
	Raft   string `json:"raft"`
	PID    int    `json:"pid"`
}

func (n *nodeSettings) run(ctx context.Context, s *cli.Set, sio stdio) error {
	n.Logger = newLogger(sio.err, n.logFormat, n.logLevel).With("node", n.Cluster.Name)
	if err := n.validate(); err != nil {
		return s.Explain(&n.Config, err)
	}
	if n.printConfig {
		s.PrintConfig(sio.out)
		return nil
	}
	if n.logFile != "" {
		lf, err := openNodeLog(n.logFile, n.logMaxSize, n.logBackups)
		if err != nil {
			return err
		}
		defer lf.close()
		n.Logger = newLogger(lf, n.logFormat, n.logLevel).With("node", n.Cluster.Name)
		err = n.serve(ctx)
		if err != nil && !lf.stderrHere() {
			// Standard error (where main reports it) is elsewhere: the
			// log says why the node stopped too.
			n.Logger.Error("node failed", "err", err)
		}
		return err
	}
	return n.serve(ctx)
}

func (n *nodeSettings) serve(ctx context.Context) error {
	if n.parentPID > 0 {
		ctx = watchParent(ctx, n.Logger, n.parentPID)
	}
	if n.idleProcs {
		stop := startIdleProcs(ctx, n.Logger)
		defer stop()
	}
	return serveNode(ctx, n)
}

// newLogger is a logger writing to w in format ("text" or "json").
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// nodeLog is a node's --log-file. The Go runtime writes a panic to
// standard error, not through the logger, so each file the log opens
// (at start and at every rotation) also receives the runtime's crash
// output, unless it is the file standard error already writes to ('shoal
// up' points both at node.log): the panic then lands in the current log
// once, rotation or not.
type nodeLog struct {
	*logfile.File
	mu   sync.Mutex
	here bool // the current file is standard error's
}

func openNodeLog(path string, maxSize int64, backups int) (*nodeLog, error) {
	l := &nodeLog{}
	var err error
	l.File, err = logfile.Open(logfile.Config{Path: path, MaxSize: maxSize, MaxBackups: backups, OnOpen: func(f *os.File) error {
		here := sameFile(f, os.Stderr)
		l.mu.Lock()
		l.here = here
		l.mu.Unlock()
		if here {
			return debug.SetCrashOutput(nil, debug.CrashOptions{})
		}
		return debug.SetCrashOutput(f, debug.CrashOptions{})
	}})
	if err != nil {
		return nil, fmt.Errorf("--log-file: %w", err)
	}
	return l, nil
}

// stderrHere reports whether standard error writes to the current file.
func (l *nodeLog) stderrHere() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.here
}

func (l *nodeLog) close() {
	debug.SetCrashOutput(nil, debug.CrashOptions{})
	l.File.Close()
}

// sameFile reports whether a and b are the same file.
func sameFile(a, b *os.File) bool {
	sa, err := a.Stat()
	if err != nil {
		return false
	}
	sb, err := b.Stat()
	return err == nil && os.SameFile(sa, sb)
}

// validate checks the node's configuration and the process's settings.
func (n *nodeSettings) validate() error {
	if err := n.Validate(); err != nil {
		return err
	}
	for _, j := range n.join {
		if _, _, err := config.CheckAddr(j); err != nil {
			return usagef("--join %q: want %v", j, err)
		}
	}
	if n.logFormat != "text" && n.logFormat != "json" {
		return usagef("--log-format %q: want text or json", n.logFormat)
	}
	if n.logMaxSize < 1<<10 {
		return usagef("--log-max-size %d: want at least 1KiB", n.logMaxSize)
	}
	if n.logBackups < 0 || n.logBackups > 1000 {
		return usagef("--log-max-backups %d: want 0 to 1000", n.logBackups)
	}
	if n.joinTimeout < 0 {
		return usagef("--join-timeout %v: want a duration of at least 0", n.joinTimeout)
	}
	return n.checkSecured()
}

// loginLimitValue binds a gitfront.LoginLimit ("10/1m", or 0).
type loginLimitValue struct{ l *gitfront.LoginLimit }

func (v loginLimitValue) String() string {
	if v.l == nil {
		return ""
	}
	return v.l.String()
}

func (v loginLimitValue) Set(s string) error {
	l, err := gitfront.ParseLoginLimit(s)
	if err != nil {
		return err
	}
	*v.l = l
	return nil
}

// levelValue binds a slog.Level.
type levelValue struct{ l *slog.Level }

func (v levelValue) String() string {
	if v.l == nil {
		return ""
	}
	return strings.ToLower(v.l.String())
}

func (v levelValue) Set(s string) error {
	if err := v.l.UnmarshalText([]byte(s)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	return nil
}

func serveNode(ctx context.Context, n *nodeSettings) error {
	cfg := n.Config
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	log := cfg.Logger
	s, err := server.StartContext(ctx, cfg)
	if err != nil {
		return startError(err, cfg.DataDir)
	}
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(shutCtx); err != nil {
			log.Warn("shutdown", "err", err)
		}
		log.Info("stopped")
	}()
	node := s.Node()
	log.Info("node started", "gossip", node.GossipAddr(), "rpc", node.Self().RPC, "raft", node.Self().Raft, "http", s.HTTPAddr(),
		"resp", s.RESPAddr(), "cache_mode", cfg.Cluster.CacheMode, "data_dir", cfg.DataDir)
	if len(n.join) > 0 {
		jctx := ctx
		if n.joinTimeout > 0 {
			var cancel context.CancelFunc
			jctx, cancel = context.WithTimeout(ctx, n.joinTimeout)
			defer cancel()
		}
		got, err := node.Join(jctx, n.join)
		if err != nil {
			if ctx.Err() != nil { // stopped (SIGTERM) while joining: a clean stop
				log.Info("shutting down", "reason", context.Cause(ctx))
				return nil
			}
			return err
		}
		log.Info("joined cluster", "seeds_answered", got, "members", len(node.Members()))
	}
	if n.readyFile != "" {
		info := readyInfo{Name: node.Name(), Gossip: node.GossipAddr(), RPC: node.Self().RPC, HTTP: s.HTTPAddr(), RESP: s.RESPAddr(), Raft: node.Self().Raft, PID: os.Getpid()}
		if err := writeJSONFile(n.readyFile, info); err != nil {
			return err
		}
	}
	<-ctx.Done()
	log.Info("shutting down", "reason", context.Cause(ctx))
	return nil
}

// startError adds to a damaged raft log's error the command that
// recovers the node, keeping it one line.
func startError(err error, dataDir string) error {
	if errors.Is(err, cp.ErrDamagedLog) {
		return fmt.Errorf("%v; to recover, move the raft state aside with 'shoal raft reset --data-dir %s' and start the node again: it rejoins its group and fetches the state from the leader (README: Operations)",
			strings.ReplaceAll(err.Error(), "\n", " "), dataDir)
	}
	return err
}

// watchParent returns a context that ends when process pid goes away.
// Started by 'shoal up', pid is the parent: the context ends when the
// process is re-parented, which is how the children of 'shoal up' stop
// even if 'shoal up' is killed. Started by hand with the flags 'shoal up'
// gave (pid is then not the parent), it ends when pid exits, and if pid
// is not running at all the node runs on its own and says so.
func watchParent(ctx context.Context, log *slog.Logger, pid int) context.Context {
	child := os.Getppid() == pid
	if !child {
		if !processAlive(pid) {
			log.Warn("--parent-pid names no running process: this node runs on its own", "parent_pid", pid)
			return ctx
		}
		log.Info("--parent-pid is not this process's parent: the node stops when that process exits", "parent_pid", pid)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		// The kernel tells a child of 'shoal up' at once (Pdeathsig);
		// this poll is the fallback, so it need not be frequent (every
		// 500 ms, it was 2 of an idle node's wake-ups a second).
		t := beat.NewTicker(2 * time.Second) // on the process's beat: see package beat
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if child && os.Getppid() != pid || !child && !processAlive(pid) {
					cancel(fmt.Errorf("parent process %d exited", pid))
					return
				}
			}
		}
	}()
	return ctx
}

// processAlive reports whether process pid exists.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// writeJSONFile writes v to path atomically (temporary file, then rename),
// so a reader never sees half a file.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
