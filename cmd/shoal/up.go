package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/dirlock"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/localcluster"
	"github.com/shoal-dev/shoal/internal/server"
)

// clusterFile is <data-dir>/cluster.json, written by 'shoal up' and read
// by 'shoal status'.
type clusterFile struct {
	CacheMode string               `json:"cache_mode"`
	Nodes     []*localcluster.Proc `json:"nodes"`
}

func init() {
	register(&command{name: "up", args: "[-- NODE-FLAGS]", max: -1, bind: bindUp,
		summary: "Start a local cluster of N nodes on loopback and watch it; Ctrl-C stops it. Flags after -- go to every node."})
}

// upSettings are those of 'shoal up'. The settings it passes to every
// node are bound onto a node's configuration, which checks them.
type upSettings struct {
	opts     localcluster.Options
	bindIP   string
	level    slog.Level
	seed     bool
	seedCfg  domain.SeedConfig
	node     server.Config
	nodeArgs []string
	db       string // --db as given: empty is <data-dir>/shoal.db
	tls      bool
}

func bindUp(s *cli.Set) runFunc {
	u := &upSettings{opts: localcluster.Options{Preset: "loopback", WatchParent: true, KeepAddrs: true, N: 3, Dir: "shoal-data", BasePort: 7946,
		HTTPBase: 8081, RESP: true, RESPBase: 7379, ReadyTimeout: 60 * time.Second}, bindIP: "127.0.0.1", seedCfg: defaultSeed(), tls: true,
		node: server.DefaultNodeConfig(server.PresetLoopback)}
	o := &u.opts
	s.Int(&o.N, "n", "number of nodes")
	s.String(&o.Dir, "data-dir", "cluster directory: one sub-directory per node with its data and node.log, and cluster.json")
	s.String(&u.bindIP, "bind-ip", "loopback address the nodes bind")
	s.Int(&o.BasePort, "base-port", "node i gossips on base+10(i-1), serves RPC on the next port and raft on the one after (0: ports picked by the OS)")
	s.Int(&o.HTTPBase, "http-base", "node i serves HTTP on http-base+i-1 (0: picked by the OS)")
	s.Int(&o.RESPBase, "resp-base", "node i serves the Redis protocol on resp-base+i-1 (0: picked by the OS; negative: off)")
	s.String(&u.node.Cluster.CacheMode, "cache-mode", "L2 cache coupling of every node: local, distributed or near")
	s.Var(levelValue{&u.level}, &u.level, "log-level", "level", "the nodes' log level: debug, info, warn or error")
	s.Duration(&o.ReadyTimeout, "ready-timeout", "how long to wait for the cluster to form")
	s.Bool(&u.seed, "seed", "fill the database with a generated data set first (skipped if it has data; sizes as 'shoal seed')")
	bindSeedSizes(s, &u.seedCfg)
	s.String(&u.node.DB.URL, "db", "database of every node (default <data-dir>/"+dbFileName+")")
	s.String(&u.node.Cache.Invalidation, "invalidation", "L2 invalidation of every node: async or sync")
	s.Int(&u.node.Table.Backups, "backups", "DISTRIBUTED partition backups, 0 to 2")
	s.Bool(&u.tls, "tls", "run the peer RPC and raft over mutual TLS, with a CA and node certificates made in <data-dir>/"+upTLSDir)
	return func(ctx context.Context, sio stdio, args []string) error {
		u.nodeArgs = args
		if err := u.validate(s); err != nil {
			return err
		}
		return u.run(ctx, sio)
	}
}

// validate checks the settings and fills the options.
func (u *upSettings) validate(s *cli.Set) error {
	if err := checkSeedFlags(u.seedCfg); err != nil {
		return err
	}
	o := &u.opts
	u.db = u.node.DB.URL
	if err := u.node.Validate(); err != nil {
		return s.Explain(&u.node, err)
	}
	o.Args = append([]string{"--invalidation", u.node.Cache.Invalidation, "--backups", strconv.Itoa(u.node.Table.Backups)}, u.nodeArgs...)
	if u.db != "" {
		o.Args = append(o.Args, "--db", u.db)
	}
	o.CacheMode, o.LogLevel = u.node.Cluster.CacheMode, levelValue{&u.level}.String()
	o.AdminUser = u.seedCfg.AdminName
	if o.N < 1 || o.N > 64 {
		return usagef("-n %d: want 1 to 64 nodes", o.N)
	}
	if ip := net.ParseIP(u.bindIP); ip == nil || !ip.IsLoopback() {
		return usagef("--bind-ip %q: 'shoal up' runs a local cluster; give a loopback address such as 127.0.0.1", u.bindIP)
	}
	o.IP = func(int) string { return u.bindIP }
	if o.BasePort < 0 || o.BasePort+10*o.N > 65535 || o.HTTPBase < 0 || o.HTTPBase+o.N > 65535 || o.RESPBase+o.N > 65535 {
		return usagef("--base-port/--http-base/--resp-base out of range for %d nodes", o.N)
	}
	o.RESP = o.RESPBase >= 0
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the shoal binary: %w", err)
	}
	o.Binary, o.BootstrapExpect = exe, o.N
	return nil
}

func (u *upSettings) run(ctx context.Context, sio stdio) error {
	o, stdout := u.opts, sio.out
	// One 'shoal up' per cluster directory: a second one would fail on
	// the first node's lock or ports, and its nodes would share the
	// running nodes' log files.
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return err
	}
	lock, err := dirlock.Acquire(ctx, o.Dir, 0)
	if err != nil {
		if errors.Is(err, dirlock.ErrLocked) {
			return fmt.Errorf("another 'shoal up' (make run) is running on %s: %w", o.Dir, err)
		}
		return err
	}
	defer lock.Release()
	if o.GossipKey, err = upGossipKey(o.Dir); err != nil {
		return err
	}
	o.GossipKeyFile = filepath.Join(o.Dir, gossipKeyFile)
	if u.tls {
		o.TLSDir = filepath.Join(o.Dir, upTLSDir)
	}
	if u.seed {
		if err := upSeed(ctx, dbURL(u.db, o.Dir), o.Dir, u.seedCfg, stdout); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "starting %d nodes in %s ...\n", o.N, o.Dir)
	c, err := localcluster.Start(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "stopping the cluster (each node leaves gracefully) ...")
		c.Stop(15 * time.Second)
		fmt.Fprintln(stdout, "stopped.")
	}()
	cf := clusterFile{CacheMode: o.CacheMode, Nodes: c.Nodes()}
	if err := writeJSONFile(filepath.Join(o.Dir, "cluster.json"), cf); err != nil {
		return err
	}
	ln, err := listenControl(o.Dir)
	if err != nil {
		return err
	}
	printProcs(stdout, c.Nodes())
	fmt.Fprintf(stdout, "\ncluster of %d nodes is up (cache mode %s); logs in %s/<node>/node.log\n", o.N, o.CacheMode, o.Dir)
	if o.TLSDir != "" {
		fmt.Fprintf(stdout, "the nodes' peer RPC and raft run over mutual TLS (CA and certificates in %s); gossip is encrypted (%s)\n",
			o.TLSDir, filepath.Join(o.Dir, gossipKeyFile))
	}
	fmt.Fprintf(stdout, "an administrator's (%s) access token is in %s; the shoal commands use it when given no credentials\n",
		o.AdminUser, filepath.Join(o.Dir, localcluster.AdminTokenFile))
	fmt.Fprintf(stdout, "try:  %s status --data-dir %s --all    or    curl -H \"Authorization: Bearer $(cat %s)\" http://%s/v1/cluster\n",
		selfName(), o.Dir, filepath.Join(o.Dir, localcluster.AdminTokenFile), c.Nodes()[0].HTTP)
	fmt.Fprintf(stdout, "A node that exits is started again; '%s up restart NAME --data-dir %s' restarts one. Ctrl-C stops the cluster.\n",
		selfName(), o.Dir)
	reqs := make(chan *restartReq)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveControl(ctx, ln, o.N, reqs)
	}()
	defer wg.Wait()
	defer os.Remove(filepath.Join(o.Dir, controlSocket))
	sv := newSupervisor(c, o.N, stdout, func(procs []*localcluster.Proc) {
		if err := writeJSONFile(filepath.Join(o.Dir, "cluster.json"), clusterFile{CacheMode: o.CacheMode, Nodes: procs}); err != nil {
			fmt.Fprintf(sio.err, "shoal up: writing cluster.json: %v\n", err)
		}
	})
	sv.run(ctx, reqs)
	return nil
}

// upTLSDir is where 'shoal up' keeps the CA and the nodes' certificates,
// in its directory.
const upTLSDir = "tls"

// gossipKeyFile is the gossip key 'shoal up' gives its nodes, in its
// directory.
const gossipKeyFile = "gossip.key"

// upGossipKey reads the cluster directory's gossip key, creating it
// (random, 0600) the first time. Each node keeps its own keyring in its
// data directory from its first start, which wins over the key it is
// given; after a rotation ('shoal keyring') a node is started with the
// key in use in the nodes' keyrings, and this file is rewritten with it
// (localcluster.Options.GossipKeyFile), so that a node added later, or
// one whose data directory was emptied, joins.
func upGossipKey(dir string) (string, error) {
	path := filepath.Join(dir, gossipKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, gerr := cluster.GenerateGossipKey()
		if gerr != nil {
			return "", gerr
		}
		f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if ferr != nil {
			return "", fmt.Errorf("gossip key: %w", ferr)
		}
		_, err = fmt.Fprintln(f, cluster.EncodeGossipKey(k))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("gossip key %s: %w", path, err)
		}
		return cluster.EncodeGossipKey(k), nil
	}
	if err != nil {
		return "", fmt.Errorf("gossip key: %w", err)
	}
	k, err := cluster.DecodeGossipKey(string(b))
	if err != nil {
		return "", fmt.Errorf("gossip key %s: %w", path, err)
	}
	return cluster.EncodeGossipKey(k), nil
}

// selfName is how the user ran this binary: bin/shoal when it is not on
// the PATH, so that the suggested commands work as printed.
func selfName() string {
	name := os.Args[0]
	if p, err := exec.LookPath(filepath.Base(name)); err == nil {
		if a, _ := filepath.Abs(p); a != "" {
			if b, _ := filepath.Abs(name); a == b {
				return filepath.Base(name)
			}
		}
	}
	return name
}

// upSeed seeds the database before the nodes start, unless it already
// holds data (a cluster started again from its directory).
func upSeed(ctx context.Context, url, dir string, cfg domain.SeedConfig, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	err := seedDatabase(ctx, url, filepath.Join(dir, "repos"), cfg, stdout)
	if errors.Is(err, domain.ErrConflict) {
		fmt.Fprintf(stdout, "database %s already has data: not seeding again\n", url)
		return nil
	}
	return err
}

func printProcs(w io.Writer, nodes []*localcluster.Proc) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPID\tGOSSIP\tRPC\tHTTP\tRESP\tSTATE")
	for _, n := range nodes {
		resp := n.RESP
		if resp == "" {
			resp = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.PID, n.Gossip, n.RPC, n.HTTP, resp, "alive")
	}
	tw.Flush()
}
