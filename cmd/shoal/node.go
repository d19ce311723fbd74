package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/server"
	"github.com/shoal-dev/shoal/l2cache"
)

// nodeFlags are the flags of 'shoal node'.
type nodeFlags struct {
	name, bind, advertise, rpc, http, dataDir string
	raft, raftAdvertise                       string
	cacheMode, logLevel, preset, readyFile    string
	join                                      listFlag
	joinTimeout                               time.Duration
	parentPID, bootstrapExpect, voters        int

	db, reposDir, invalidation, packDir      string
	backups                                  int
	cacheTTL, packTTL, cacheLease            time.Duration
	dbConnMaxLifetime                        time.Duration
	cacheMaxBytes, packMaxBytes, packMinFree byteSize
	packCache, advertCache                   bool
	poolUpload, poolReceive, poolWeb         int
}

func (f *nodeFlags) register(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&f.name, "name", host, "node name, unique in the cluster")
	fs.StringVar(&f.bind, "bind", "127.0.0.1:7946", "gossip address host:port (UDP and TCP; port 0 picks one)")
	fs.StringVar(&f.advertise, "advertise", "", "gossip address other nodes should use, if not --bind")
	fs.StringVar(&f.rpc, "rpc", "", "peer RPC address host:port (default: --bind's host, port+1, or 0)")
	fs.StringVar(&f.http, "http", "127.0.0.1:8080", "HTTP address host:port")
	fs.StringVar(&f.raft, "raft", "", "raft address host:port (default: --bind's host, port+2, or 0); keep it stable across restarts")
	fs.StringVar(&f.raftAdvertise, "raft-advertise", "", "raft address other nodes should use, if not --raft")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "form a new raft group once this many nodes are alive (give every node of a new cluster the same number; 0: join an existing group)")
	fs.IntVar(&f.voters, "voters", 3, "raft voters at most (3 or 5)")
	fs.StringVar(&f.dataDir, "data-dir", "", "this node's data directory (default ./shoal-data/NAME)")
	fs.StringVar(&f.cacheMode, "cache-mode", cluster.CacheModeLocal, "L2 cache coupling: local, distributed or near (every node must agree)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.preset, "preset", "auto", "failure-detection tuning: lan, loopback, or auto (loopback when --bind is a loopback address)")
	fs.Var(&f.join, "join", "gossip address of a node to join (repeatable; comma-separated in $SHOAL_JOIN)")
	fs.DurationVar(&f.joinTimeout, "join-timeout", 0, "give up joining after this long (0: keep trying)")
	fs.StringVar(&f.readyFile, "ready-file", "", "write the node's addresses as JSON here once it serves")
	fs.IntVar(&f.parentPID, "parent-pid", 0, "shut down gracefully when this parent process goes away (set by 'shoal up')")
	fs.StringVar(&f.db, "db", "", "domain database: a postgres:// URL or a SQLite file (default shoal.db beside --data-dir, shared by a local cluster)")
	fs.DurationVar(&f.dbConnMaxLifetime, "db-conn-max-lifetime", 5*time.Second, "replace pooled database connections after this long; with SQLite it bounds how long a connection keeps using a file that was moved away")
	fs.StringVar(&f.reposDir, "repos-dir", "", "bare git repositories, shared by the nodes (default repos beside --data-dir)")
	fs.StringVar(&f.invalidation, "invalidation", "async", "L2 invalidation: async, or sync (a write returns once every live member has applied it)")
	fs.IntVar(&f.backups, "backups", 1, "DISTRIBUTED mode: synchronous backups of each partition, 0 to 2")
	fs.DurationVar(&f.cacheTTL, "cache-ttl", 0, "expire L2 entries this long after they are cached (0: never)")
	fs.DurationVar(&f.cacheLease, "cache-lease", 2*time.Second, "read lease: how long a node serves cached state after it last confirmed no write excluded it (the most a member that stops answering adds to a write)")
	f.cacheMaxBytes = 64 << 20
	fs.Var(&f.cacheMaxBytes, "cache-max-bytes", "L2 cache size on this node (e.g. 64MiB)")
	fs.BoolVar(&f.packCache, "pack-cache", true, "serve repeated clones from the pack cache")
	fs.StringVar(&f.packDir, "pack-cache-dir", "", "this node's pack cache directory (default DATA-DIR/packcache)")
	f.packMaxBytes = 1 << 30
	fs.Var(&f.packMaxBytes, "pack-cache-max-bytes", "pack cache disk budget (e.g. 1GiB)")
	f.packMinFree = 1 << 30
	fs.Var(&f.packMinFree, "pack-cache-min-free", "below this much free disk the pack cache steps aside (e.g. 1GiB; 0: no floor)")
	fs.DurationVar(&f.packTTL, "pack-cache-ttl", 24*time.Hour, "how long a pack cache entry may be served")
	fs.BoolVar(&f.advertCache, "ref-advert-cache", false, "cache ref advertisements (info/refs, and v2 ls-refs in the pack cache) per repository generation")
	fs.IntVar(&f.poolUpload, "pool-upload", 0, "concurrent git upload-pack requests (0: 1.5 x cores)")
	fs.IntVar(&f.poolReceive, "pool-receive", 0, "concurrent git receive-pack requests (0: cores)")
	fs.IntVar(&f.poolWeb, "pool-web", 0, "concurrent web and REST requests (0: 64)")
}

// serviceConfig fills the cache, database, git and pool settings.
func (f *nodeFlags) serviceConfig(c *server.Config) error {
	if f.invalidation != l2cache.InvalidationAsync && f.invalidation != l2cache.InvalidationSync {
		return usagef("--invalidation %q: want async or sync", f.invalidation)
	}
	if f.backups < 0 || f.backups > 2 {
		return usagef("--backups %d: want 0, 1 or 2", f.backups)
	}
	if f.cacheTTL < 0 || f.packTTL < 0 || f.dbConnMaxLifetime < 0 || f.cacheLease < 0 {
		return usagef("--cache-ttl, --cache-lease, --pack-cache-ttl and --db-conn-max-lifetime must not be negative")
	}
	for name, n := range map[string]int{"--pool-upload": f.poolUpload, "--pool-receive": f.poolReceive, "--pool-web": f.poolWeb} {
		if n < 0 || n > 100000 {
			return usagef("%s %d: want 0 (default) to 100000", name, n)
		}
	}
	backups := f.backups
	c.DBURL, c.ReposDir, c.DBConnMaxLifetime = f.db, f.reposDir, f.dbConnMaxLifetime
	c.Cache = server.CacheConfig{Invalidation: f.invalidation, Backups: &backups, MaxCost: int64(f.cacheMaxBytes), TTL: f.cacheTTL, Lease: f.cacheLease}
	c.Packs = server.PackConfig{Off: !f.packCache, Dir: f.packDir, MaxBytes: int64(f.packMaxBytes),
		MinFree: uint64(f.packMinFree), TTL: f.packTTL, AdvertCache: f.advertCache}
	c.Pools.Upload.Concurrency, c.Pools.Receive.Concurrency, c.Pools.Web.Concurrency = f.poolUpload, f.poolReceive, f.poolWeb
	return nil
}

// readyInfo is written to --ready-file.
type readyInfo struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"`
	RPC    string `json:"rpc"`
	HTTP   string `json:"http"`
	PID    int    `json:"pid"`
}

func newNodeFlagSet(f *nodeFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	f.register(fs)
	return fs
}

func runNode(args []string, stderr io.Writer) error {
	var f nodeFlags
	fs := newNodeFlagSet(&f)
	fs.SetOutput(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := f.serverConfig(stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.parentPID > 0 {
		ctx = watchParent(ctx, f.parentPID)
	}
	return serveNode(ctx, cfg, f)
}

func (f *nodeFlags) serverConfig(stderr io.Writer) (server.Config, error) {
	level, err := parseLevel(f.logLevel)
	if err != nil {
		return server.Config{}, err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("node", f.name)
	if f.name == "" {
		return server.Config{}, usagef("--name is required")
	}
	bindHost, bindPort, err := hostPort("--bind", f.bind)
	if err != nil {
		return server.Config{}, err
	}
	if _, _, err := hostPort("--http", f.http); err != nil {
		return server.Config{}, err
	}
	for _, a := range []struct {
		flag string
		v    *string
		off  int
	}{{"--rpc", &f.rpc, 1}, {"--raft", &f.raft, 2}} {
		if *a.v == "" {
			port := 0
			if bindPort > 0 && bindPort+a.off <= 65535 {
				port = bindPort + a.off
			}
			*a.v = net.JoinHostPort(bindHost, strconv.Itoa(port))
		} else if _, _, err := hostPort(a.flag, *a.v); err != nil {
			return server.Config{}, err
		}
	}
	if f.raftAdvertise != "" {
		if _, _, err := hostPort("--raft-advertise", f.raftAdvertise); err != nil {
			return server.Config{}, err
		}
	}
	if f.bootstrapExpect < 0 || f.bootstrapExpect > 64 {
		return server.Config{}, usagef("--bootstrap-expect %d: want 0 to 64", f.bootstrapExpect)
	}
	if f.voters != 1 && f.voters != 3 && f.voters != 5 && f.voters != 7 {
		return server.Config{}, usagef("--voters %d: want 1, 3, 5 or 7 (an odd number keeps a majority)", f.voters)
	}
	for _, j := range f.join {
		if _, _, err := hostPort("--join", j); err != nil {
			return server.Config{}, err
		}
	}
	if f.preset == "auto" {
		f.preset = "lan"
		if ip := net.ParseIP(bindHost); ip != nil && ip.IsLoopback() {
			f.preset = "loopback"
		}
	}
	var cc *cluster.Config
	sc := cp.Config{BootstrapExpect: f.bootstrapExpect, MaxVoters: f.voters}
	switch f.preset {
	case "lan":
		cc, sc.Raft = cluster.DefaultLANConfig(), cp.LANRaftConfig()
	case "loopback":
		cc, sc.Raft = cluster.DefaultLoopbackConfig(), cp.LoopbackRaftConfig()
		sc.VoterGrace = 3 * time.Second
		sc.ReconcileInterval = 200 * time.Millisecond
	default:
		return server.Config{}, usagef("--preset %q: want lan, loopback or auto", f.preset)
	}
	switch f.cacheMode {
	case cluster.CacheModeLocal, cluster.CacheModeDistributed, cluster.CacheModeNear:
	default:
		return server.Config{}, usagef("--cache-mode %q: want local, distributed or near", f.cacheMode)
	}
	cc.Name, cc.BindAddr, cc.AdvertiseAddr, cc.RPCAddr = f.name, f.bind, f.advertise, f.rpc
	cc.CacheMode, cc.Logger = f.cacheMode, logger
	if f.dataDir == "" {
		f.dataDir = filepath.Join("shoal-data", f.name)
	}
	c := server.Config{Cluster: *cc, HTTPAddr: f.http, DataDir: f.dataDir, Logger: logger,
		RaftAddr: f.raft, RaftAdvertise: f.raftAdvertise, Store: sc}
	return c, f.serviceConfig(&c)
}

func serveNode(ctx context.Context, cfg server.Config, f nodeFlags) error {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
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
	n := s.Node()
	log.Info("node started", "gossip", n.GossipAddr(), "rpc", n.Self().RPC, "raft", n.Self().Raft, "http", s.HTTPAddr(),
		"cache_mode", cfg.Cluster.CacheMode, "data_dir", cfg.DataDir)
	if len(f.join) > 0 {
		jctx := ctx
		if f.joinTimeout > 0 {
			var cancel context.CancelFunc
			jctx, cancel = context.WithTimeout(ctx, f.joinTimeout)
			defer cancel()
		}
		got, err := n.Join(jctx, f.join)
		if err != nil {
			return err
		}
		log.Info("joined cluster", "seeds_answered", got, "members", len(n.Members()))
	}
	if f.readyFile != "" {
		info := readyInfo{Name: n.Name(), Gossip: n.GossipAddr(), RPC: n.Self().RPC, HTTP: s.HTTPAddr(), PID: os.Getpid()}
		if err := writeJSONFile(f.readyFile, info); err != nil {
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

// watchParent returns a context that ends when the process's parent is no
// longer parentPID: the parent died and the process was re-parented. It is
// how the children of 'shoal up' stop even if 'shoal up' is killed.
func watchParent(ctx context.Context, parentPID int) context.Context {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parentPID {
					cancel(errors.New("parent process exited"))
					return
				}
			}
		}
	}()
	return ctx
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, usagef("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func hostPort(flagName, v string) (string, int, error) {
	host, p, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, usagef("%s %q: want host:port (%v)", flagName, v, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, usagef("%s %q: port must be a number from 0 to 65535", flagName, v)
	}
	if host == "" {
		return "", 0, usagef("%s %q: the host is missing", flagName, v)
	}
	return host, port, nil
}

// writeJSONFile writes v to path atomically (temporary file, then rename),
// so a reader never sees half a file.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
