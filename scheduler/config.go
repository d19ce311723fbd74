package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
)

// Store is the part of the consistent store (*cp.Store) the scheduler
// uses. Errors must be cp's sentinels (cp.ErrNotFound,
// cp.ErrVersionMismatch, cp.ErrIndeterminate, ...).
type Store interface {
	Get(ctx context.Context, key string) (cp.KV, error)
	List(ctx context.Context, prefix string) ([]cp.KV, error)
	StaleList(prefix string) []cp.KV
	Put(ctx context.Context, key string, value []byte, opts ...cp.WriteOption) (uint64, error)
	CompareAndSet(ctx context.Context, key string, expect uint64, value []byte, opts ...cp.WriteOption) (uint64, error)
	Delete(ctx context.Context, key string, opts ...cp.WriteOption) error
}

// Bus is the part of the cluster bus (*cluster.Bus) the scheduler uses.
type Bus interface {
	Publish(topic string, payload []byte) error
	Subscribe(topic string, s cluster.Subscriber) (cancel func())
}

// Topic is the bus topic on which schedulers announce job changes.
const Topic = "scheduler"

// Config configures a Scheduler.
type Config struct {
	// Name is this node's name, written into run history and runner
	// registrations. Required.
	Name string
	// Store holds clustered jobs. Nil: only RunLocally jobs can be
	// scheduled (ErrNoStore otherwise).
	Store Store
	// Bus announces job changes to the other nodes. Nil: they learn of
	// changes by the periodic refresh, or when a claim finds their copy
	// stale.
	Bus Bus
	// Members lists the names of the live members, this node included; it
	// decides which registered runners count and which unfinished runs
	// are lost. Nil: this node alone.
	Members func() []string
	// Clock is the scheduler's time (default RealClock).
	Clock Clock
	// Workers bounds the runs in progress on this node (default 4). A due
	// job waits for a free worker.
	Workers int
	// RefreshInterval is how often the node re-reads every clustered job
	// from the store, catching what the bus missed (default 1 minute). A
	// missed-message report from the bus refreshes at once.
	RefreshInterval time.Duration
	// MisfireThreshold: when a claim finds the following fire time more
	// than this far in the past, the missed fire times are coalesced
	// into the run being claimed (default 5 s). Keep it above the clock
	// skew between nodes.
	MisfireThreshold time.Duration
	// ClaimStagger spreads the claims of one fire time over the nodes
	// that can run it: each fire time ranks them by a hash of the job and
	// the fire time (rendezvous hashing), and the node ranked k claims
	// k·ClaimStagger late, unless the announcement of the first node's
	// claim has reached it by then. Runs stay spread over the nodes, and
	// the nodes rarely collide on a claim (each collision is a rejected
	// raft command and a re-read). The cost: when the first-ranked node
	// is dead or slow, the run starts that much later. Default 20 ms;
	// negative: every node claims at the fire time.
	ClaimStagger time.Duration
	// RetryInterval is how long a node waits before trying a claim again
	// after a store error (no leader, timeout), and before repeating a
	// failed refresh (default 250 ms).
	RetryInterval time.Duration
	// StoreTimeout bounds each store call (default 5 s).
	StoreTimeout time.Duration
	// HistoryLimit is the number of runs kept per job (default 10).
	HistoryLimit int
	// MaxParams bounds a job's parameters (default 16 KiB): they are
	// stored, with the history, in one store value.
	MaxParams int
	// APIMinInterval is the shortest time between two fire times of a job
	// scheduled through the HTTP API (Handler), default 1 s; negative: no
	// bound. Jobs scheduled in code are not bound.
	APIMinInterval time.Duration
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
}

// NodeConfig is a Config for a cluster node and its store, with defaults
// for the rest.
func NodeConfig(n *cluster.Node, s *cp.Store) Config {
	return Config{Name: n.Name(), Store: s, Bus: n.Bus(), Members: AliveMembers(n)}
}

// AliveMembers lists n's alive members (itself included).
func AliveMembers(n *cluster.Node) func() []string {
	return func() []string {
		var out []string
		for _, m := range n.Members() {
			if m.State == cluster.StateAlive || m.State == cluster.StateSuspect {
				out = append(out, m.Name)
			}
		}
		return out
	}
}

func (c *Config) validate() error {
	if c.Name == "" {
		return errors.New("scheduler: Config.Name is required")
	}
	return c.Validate()
}

// Validate fills the zero settings with their defaults and rejects
// negative ones; it does not look at Name, Store and Bus, which New
// needs.
func (c *Config) Validate() error {
	if c.ClaimStagger < 0 {
		c.ClaimStagger = 0
	} else if c.ClaimStagger == 0 {
		c.ClaimStagger = 20 * time.Millisecond
	}
	if c.Workers < 0 || c.RefreshInterval < 0 || c.MisfireThreshold < 0 || c.RetryInterval < 0 ||
		c.StoreTimeout < 0 || c.HistoryLimit < 0 || c.MaxParams < 0 {
		return fmt.Errorf("%w: negative setting in scheduler config", ErrInvalid)
	}
	if c.Members == nil && c.Name != "" {
		name := c.Name
		c.Members = func() []string { return []string{name} }
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	c.Workers = cmp0(c.Workers, 4)
	c.RefreshInterval = cmp0(c.RefreshInterval, time.Minute)
	c.MisfireThreshold = cmp0(c.MisfireThreshold, 5*time.Second)
	c.RetryInterval = cmp0(c.RetryInterval, 250*time.Millisecond)
	c.StoreTimeout = cmp0(c.StoreTimeout, 5*time.Second)
	c.HistoryLimit = cmp0(c.HistoryLimit, 10)
	c.MaxParams = cmp0(c.MaxParams, 16<<10)
	c.APIMinInterval = cmp0(c.APIMinInterval, time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func cmp0[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// aliveSet is Members as a set.
func (c *Config) aliveSet() map[string]bool {
	m := map[string]bool{c.Name: true}
	for _, n := range c.Members() {
		m[n] = true
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
