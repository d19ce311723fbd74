package server

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/dmap"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/tlsutil"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/packcache"
	"github.com/shoal-dev/shoal/resp"
	"github.com/shoal-dev/shoal/scheduler"
)

// Config configures a Server: the configurations of the parts it
// assembles, each validated by its own package, and the few settings of
// the node itself. Start from DefaultNodeConfig. A part's fields that
// wire it to the others (a Node, a Store, a Logger) are filled by Start
// and need not be set.
type Config struct {
	// Preset chooses the timing of gossip and raft where it is left zero
	// (Cluster.Memberlist, GapTimeout, LeaveTimeout and the reconnect
	// intervals; Store.Raft with LeaderHeartbeatTimeout, VoterGrace and
	// ReconcileInterval):
	// PresetLAN, PresetLoopback, or PresetAuto (or empty), which is
	// loopback when Cluster.BindAddr is a loopback address. Validate
	// resolves auto.
	Preset string
	// Cluster configures the cluster member. Start fills its HTTPAddr,
	// RaftAddr, Version and Logger; an empty RPCAddr is BindAddr's host
	// and port + 1 (port 0 if BindAddr's is 0).
	Cluster cluster.Config
	// HTTPAddr is where the HTTP endpoints listen, "host:port".
	HTTPAddr string
	// DataDir is the node's own directory, created if missing (default
	// shoal-data/NAME).
	DataDir string
	// RaftAddr is where raft listens, "host:port" (default BindAddr's host
	// and port + 2); RaftAdvertise, if set, is the address peers use.
	RaftAddr, RaftAdvertise string
	// Store configures the consistent store; Node, Transport, DataDir and
	// Logger are filled by Start.
	Store cp.Config
	// DB is the domain database. An empty URL is the SQLite file
	// shoal.db beside DataDir, shared by the nodes of a local cluster.
	DB domain.Config
	// Cache configures the L2 cache. Its Mode is Cluster.CacheMode; Bus,
	// Node, Keeper, Lease and Logger are filled by Start.
	Cache l2cache.Config
	// Table shapes the DISTRIBUTED partition table (partitions, backups);
	// Node, Store and Logger are filled by Start.
	Table l2cache.TableConfig
	// Lease is the node's read lease; Name, Store and Logger are filled
	// by Start.
	Lease l2cache.LeaseConfig
	// Maps configures the node's part of the named maps (package dmap),
	// on the partition table's partitions; Node, Keeper, Lease,
	// Partitions, OnInvalidate and Logger are filled by Start.
	Maps dmap.Config
	// RESP configures the Redis protocol endpoint over the maps (off when
	// its Addr is empty); Listener, Map, Node, Auth, Version and Logger are
	// filled by Start.
	RESP resp.Config
	// PackCache serves repeated clones from the pack cache.
	PackCache bool
	// Packs configures the pack cache (an empty Dir is
	// DataDir/packcache); Generations, Announce, LsRefs and Logger are
	// filled by Start.
	Packs packcache.Config
	// Pushes configures the repositories' generations and push markers in
	// the consistent store; Store, Node and Logger are filled by Start.
	Pushes packcache.StoreGenerationsConfig
	// RefAdvertCache caches ref advertisements (info/refs, and v2
	// ls-refs in the pack cache) per repository generation; it needs the
	// pack cache.
	RefAdvertCache bool
	// Git configures git smart HTTP. An empty ReposDir is repos beside
	// DataDir, shared by the nodes; Authorizer, UploadPacker, PushGuard,
	// OnPush, AdvertGenerations and Logger are filled by Start.
	Git gitfront.GitConfig
	// Pools bounds the front's request pools; zero fields take
	// gitfront.DefaultPools'.
	Pools gitfront.Pools
	// HTTP bounds the HTTP connections: header and idle timeouts,
	// connections per client, the minimum rate of request bodies.
	HTTP HTTPConfig
	// TLS names the node's CA, certificate and key (tlsutil): with them,
	// the peer RPC and raft run over mutual TLS 1.3, and only nodes
	// holding a certificate of the same CA, for their own name, are
	// heard. The files are reloaded when they change. Name, Logger and
	// the intervals are filled by Start.
	TLS tlsutil.Config
	// Scheduler configures the job scheduler; Name, Store, Bus, Members
	// and Logger are filled by Start.
	Scheduler scheduler.Config
	// UI paces the dashboard at /ui/: its sampling interval and how far
	// back its charts reach (zero: 5 s and 15 min).
	UI UIConfig
	// Logger receives the node's logs (default slog.Default()).
	Logger *slog.Logger
	// LockWait is how long Start waits for the data directory's lock
	// while another process holds it (default 2 s: long enough for a
	// node that is stopping to exit, short enough to be "at once").
	LockWait time.Duration
}

// UIConfig paces the dashboard (internal/ui).
type UIConfig struct {
	Interval, Window time.Duration
}

// The presets: the timing of gossip and raft.
const (
	PresetAuto     = "auto"
	PresetLAN      = "lan"
	PresetLoopback = "loopback"
)

// DefaultNodeConfig is a node's configuration with every part's
// defaults (each package's Default…Config), the node's own (gossip on
// 127.0.0.1:7946, HTTP on 127.0.0.1:8080, the host's name, the pack
// cache on), and the timing of preset, which may be PresetAuto.
func DefaultNodeConfig(preset string) Config {
	host, _ := os.Hostname()
	c := Config{
		Preset:    preset,
		Cluster:   cluster.Config{Name: host, BindAddr: "127.0.0.1:7946", CacheMode: cluster.CacheModeLocal},
		HTTPAddr:  "127.0.0.1:8080",
		Store:     cp.Config{MaxVoters: cp.DefaultConfig().MaxVoters},
		DB:        domain.DefaultConfig(),
		Cache:     l2cache.DefaultConfig(),
		Table:     l2cache.DefaultTableConfig(),
		Lease:     l2cache.DefaultLeaseConfig(),
		RESP:      resp.DefaultConfig(),
		PackCache: true,
		Packs:     packcache.DefaultConfig(""),
		Pools:     gitfront.DefaultPools(),
		HTTP:      DefaultHTTPConfig(),
		Scheduler: scheduler.Config{APIMinInterval: time.Second},
	}
	return c
}

// Validate fills the defaults that depend on other settings (the
// preset's timing, the addresses derived from BindAddr, the directories
// derived from DataDir), then has each part's package validate its
// configuration. A refused setting is a *config.FieldError whose Field
// is its path in Config ("Store.MaxVoters"). Start calls it; calling it
// again changes nothing.
func (c *Config) Validate() error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.LockWait <= 0 {
		c.LockWait = 2 * time.Second
	}
	if err := c.applyPreset(); err != nil {
		return err
	}
	if err := c.deriveAddrs(); err != nil {
		return err
	}
	c.deriveDirs()
	c.Cache.Mode = c.Cluster.CacheMode
	for _, p := range []struct {
		name     string
		validate func() error
	}{
		{"Cluster", c.Cluster.Validate}, {"Store", c.Store.Validate}, {"DB", c.DB.Validate},
		{"Cache", c.Cache.Validate}, {"Table", c.Table.Validate}, {"Lease", c.Lease.Validate},
		{"Maps", c.Maps.Validate}, {"RESP", c.RESP.Validate},
		{"Pools", c.Pools.Validate}, {"HTTP", c.HTTP.Validate}, {"Scheduler", c.Scheduler.Validate},
	} {
		if err := p.validate(); err != nil {
			return config.Within(p.name, err)
		}
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	return c.validatePacks()
}

// validateTLS refuses a partial TLS configuration: the CA, the
// certificate and the key go together.
func (c *Config) validateTLS() error {
	if !c.TLS.Enabled() {
		return nil
	}
	for _, f := range []struct{ field, v string }{{"CAFile", c.TLS.CAFile}, {"CertFile", c.TLS.CertFile}, {"KeyFile", c.TLS.KeyFile}} {
		if f.v == "" {
			return config.Invalid("server", "TLS."+f.field, f.v, "a file: the CA, the certificate and the key go together")
		}
	}
	return nil
}

// applyPreset resolves PresetAuto and fills the timing left zero from
// the preset's configurations.
func (c *Config) applyPreset() error {
	if c.Preset == "" || c.Preset == PresetAuto {
		c.Preset = PresetLAN
		if host, _, err := net.SplitHostPort(c.Cluster.BindAddr); err == nil {
			if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
				c.Preset = PresetLoopback
			}
		}
	}
	var cc *cluster.Config
	var sc cp.Config
	switch c.Preset {
	case PresetLAN:
		cc, sc = cluster.DefaultLANConfig(), cp.DefaultConfig()
	case PresetLoopback:
		cc, sc = cluster.DefaultLoopbackConfig(), cp.DefaultLoopbackConfig()
	default:
		return config.Invalid("server", "Preset", c.Preset, "lan, loopback or auto")
	}
	fill(&c.Cluster.Memberlist, cc.Memberlist)
	fill(&c.Cluster.GapTimeout, cc.GapTimeout)
	fill(&c.Cluster.LeaveTimeout, cc.LeaveTimeout)
	fill(&c.Cluster.ReconnectInterval, cc.ReconnectInterval)
	fill(&c.Cluster.ReconnectTimeout, cc.ReconnectTimeout)
	if c.Store.Raft == nil {
		// The leader's heartbeat timeout goes with the raft timing it was
		// chosen for (a Raft given by hand keeps raft's symmetric one).
		c.Store.Raft = sc.Raft
		fill(&c.Store.LeaderHeartbeatTimeout, sc.LeaderHeartbeatTimeout)
	}
	fill(&c.Store.VoterGrace, sc.VoterGrace)
	fill(&c.Store.ReconcileInterval, sc.ReconcileInterval)
	return nil
}

// deriveAddrs checks the node's own addresses and derives the empty RPC
// and raft addresses from the gossip address: its host, and its port + 1
// and + 2 (or 0 when it is 0 or too high).
func (c *Config) deriveAddrs() error {
	if err := config.Addr("server", "HTTPAddr", c.HTTPAddr); err != nil {
		return err
	}
	if c.RaftAdvertise != "" {
		if err := config.Addr("server", "RaftAdvertise", c.RaftAdvertise); err != nil {
			return err
		}
	}
	host, port, err := config.CheckAddr(c.Cluster.BindAddr)
	if err != nil {
		if c.Cluster.Transport != nil {
			return nil // in-memory gossip: nothing to derive from
		}
		return config.Invalid("cluster", "Cluster.BindAddr", c.Cluster.BindAddr, err.Error())
	}
	for _, a := range []struct {
		field string
		v     *string
		off   int
	}{{"Cluster.RPCAddr", &c.Cluster.RPCAddr, 1}, {"RaftAddr", &c.RaftAddr, 2}} {
		if *a.v == "" {
			p := 0
			if port > 0 && port+a.off <= 65535 {
				p = port + a.off
			}
			*a.v = net.JoinHostPort(host, strconv.Itoa(p))
		} else if err := config.Addr("server", a.field, *a.v); err != nil {
			return err
		}
	}
	return nil
}

// deriveDirs fills the directories: DataDir from the node's name, and
// the database, repositories, pack cache and gossip keyring from DataDir.
func (c *Config) deriveDirs() {
	if c.DataDir == "" {
		c.DataDir = filepath.Join("shoal-data", c.Cluster.Name)
	}
	parent := filepath.Dir(filepath.Clean(c.DataDir))
	fill(&c.DB.URL, filepath.Join(parent, "shoal.db"))
	fill(&c.Git.ReposDir, filepath.Join(parent, "repos"))
	fill(&c.Packs.Dir, filepath.Join(c.DataDir, "packcache"))
	fill(&c.Cluster.KeyringFile, filepath.Join(c.DataDir, KeyringFileName))
}

// KeyringFileName is the gossip keyring's file in a node's DataDir.
const KeyringFileName = "gossip.keyring"

// validatePacks validates the pack cache's configuration when it is on.
func (c *Config) validatePacks() error {
	if !c.PackCache {
		if c.RefAdvertCache {
			return errors.New("server: the ref advertisement cache needs the pack cache")
		}
		return nil
	}
	if err := c.Packs.Validate(); err != nil {
		return config.Within("Packs", err)
	}
	return config.Within("Pushes", c.Pushes.Validate())
}

// fill sets *v to d if it is zero.
func fill[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}
