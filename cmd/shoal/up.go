package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// clusterFile is <data-dir>/cluster.json, written by 'shoal up' and read
// by 'shoal status'.
type clusterFile struct {
	CacheMode string               `json:"cache_mode"`
	Nodes     []*localcluster.Proc `json:"nodes"`
}

func runUp(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := localcluster.Options{Preset: "loopback", WatchParent: true}
	var bindIP string
	fs.IntVar(&opts.N, "n", 3, "number of nodes")
	fs.StringVar(&opts.Dir, "data-dir", "shoal-data", "cluster directory: one sub-directory per node with its data and node.log, and cluster.json")
	fs.StringVar(&bindIP, "bind-ip", "127.0.0.1", "loopback address the nodes bind")
	fs.IntVar(&opts.BasePort, "base-port", 7946, "node i gossips on base+10(i-1), serves RPC on the next port and raft on the one after (0: ports picked by the OS)")
	fs.IntVar(&opts.HTTPBase, "http-base", 8081, "node i serves HTTP on http-base+i-1 (0: picked by the OS)")
	fs.StringVar(&opts.CacheMode, "cache-mode", "local", "L2 cache coupling of every node: local, distributed or near")
	fs.StringVar(&opts.LogLevel, "log-level", "info", "the nodes' log level")
	fs.DurationVar(&opts.ReadyTimeout, "ready-timeout", 60*time.Second, "how long to wait for the cluster to form")
	var seed bool
	var db, invalidation string
	var backups int
	var seedCfg domain.SeedConfig
	fs.BoolVar(&seed, "seed", false, "fill the database with a generated data set first (skipped if it has data; sizes as 'shoal seed')")
	seedFlags(fs, &seedCfg)
	fs.StringVar(&db, "db", "", "database of every node (default <data-dir>/"+dbFileName+")")
	fs.StringVar(&invalidation, "invalidation", "async", "L2 invalidation of every node: async or sync")
	fs.IntVar(&backups, "backups", 1, "DISTRIBUTED partition backups, 0 to 2")
	// Flags after -- go to every node as they are.
	nodeArgs := []string{}
	if i := slices.Index(args, "--"); i >= 0 {
		args, nodeArgs = args[:i], args[i+1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkSeedFlags(seedCfg); err != nil {
		return err
	}
	if invalidation != "async" && invalidation != "sync" {
		return usagef("--invalidation %q: want async or sync", invalidation)
	}
	if backups < 0 || backups > 2 {
		return usagef("--backups %d: want 0, 1 or 2", backups)
	}
	opts.Args = append([]string{"--invalidation", invalidation, "--backups", strconv.Itoa(backups)}, nodeArgs...)
	if db != "" {
		opts.Args = append(opts.Args, "--db", db)
	}
	if opts.N < 1 || opts.N > 64 {
		return usagef("-n %d: want 1 to 64 nodes", opts.N)
	}
	if ip := net.ParseIP(bindIP); ip == nil || !ip.IsLoopback() {
		return usagef("--bind-ip %q: 'shoal up' runs a local cluster; give a loopback address such as 127.0.0.1", bindIP)
	}
	opts.IP = func(int) string { return bindIP }
	if opts.BasePort < 0 || opts.BasePort+10*opts.N > 65535 || opts.HTTPBase < 0 || opts.HTTPBase+opts.N > 65535 {
		return usagef("--base-port/--http-base out of range for %d nodes", opts.N)
	}
	if _, err := parseLevel(opts.LogLevel); err != nil {
		return err
	}
	if opts.CacheMode != "local" && opts.CacheMode != "distributed" && opts.CacheMode != "near" {
		return usagef("--cache-mode %q: want local, distributed or near", opts.CacheMode)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the shoal binary: %w", err)
	}
	opts.Binary = exe
	opts.BootstrapExpect = opts.N

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if seed {
		if err := upSeed(ctx, dbURL(db, opts.Dir), opts.Dir, seedCfg, stdout); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "starting %d nodes in %s ...\n", opts.N, opts.Dir)
	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "stopping the cluster (each node leaves gracefully) ...")
		c.Stop(15 * time.Second)
		fmt.Fprintln(stdout, "stopped.")
	}()
	cf := clusterFile{CacheMode: opts.CacheMode, Nodes: c.Nodes()}
	if err := writeJSONFile(filepath.Join(opts.Dir, "cluster.json"), cf); err != nil {
		return err
	}
	printProcs(stdout, c.Nodes())
	fmt.Fprintf(stdout, "\ncluster of %d nodes is up (cache mode %s); logs in %s/<node>/node.log\n", opts.N, opts.CacheMode, opts.Dir)
	fmt.Fprintf(stdout, "try:  shoal status --data-dir %s --all    or    curl http://%s/v1/cluster\nCtrl-C stops the cluster.\n",
		opts.Dir, c.Nodes()[0].HTTP)
	waitCluster(ctx, c, opts.N, stderr)
	return nil
}

// upSeed seeds the database before the nodes start, unless it already
// holds data (a cluster started again from its directory).
func upSeed(ctx context.Context, url, dir string, cfg domain.SeedConfig, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
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
	fmt.Fprintln(tw, "NAME\tPID\tGOSSIP\tRPC\tHTTP\tSTATE")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", n.Name, n.PID, n.Gossip, n.RPC, n.HTTP, "alive")
	}
	tw.Flush()
}

// waitCluster returns when ctx ends (Ctrl-C, SIGTERM) or every node has
// exited, reporting nodes that exit on their own.
func waitCluster(ctx context.Context, c *localcluster.Cluster, n int, stderr io.Writer) {
	for alive := n; alive > 0; alive-- {
		select {
		case <-ctx.Done():
			return
		case p := <-c.Exited():
			fmt.Fprintf(stderr, "shoal up: %s exited unexpectedly (%v); see %s\n", p.Name, p.ExitErr(), p.Log)
		}
	}
}
