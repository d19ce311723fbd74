package l2cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/beat"
	"github.com/shoal-dev/shoal/internal/config"
)

// TableKey is where the partition table lives in the consistent store.
const TableKey = "l2/partitions"

// TableConfig configures a TableKeeper.
type TableConfig struct {
	Node  *cluster.Node
	Store *cp.Store
	// Partitions (default DefaultPartitions) and Backups shape the
	// table: each partition has an owner and Backups synchronous backups,
	// 0 (none) to MaxBackups. DefaultTableConfig has 1.
	Partitions, Backups int
	// Interval is how often the leader re-checks the table even without a
	// membership event (default 1 s).
	Interval time.Duration
	Logger   *slog.Logger
	// Now is the clock that times adoptions (default time.Now).
	Now func() time.Time
}

// historyLen is how many adopted tables a keeper remembers: enough to
// tell whether a partition's owner held it through every epoch between
// two of its accesses.
const historyLen = 256

// adopted is a table and when this node adopted it.
type adopted struct {
	t  *PartitionTable
	at time.Time
}

// TableKeeper keeps this node's copy of the partition table current (by
// watching the store) and, while this node leads the raft group, keeps the
// table in line with the membership: it recomputes it on every membership
// change and commits it with compare-and-set on the table's version, so
// a leader that lost its leadership in between cannot overwrite a newer
// table.
type TableKeeper struct {
	cfg   TableConfig
	table atomic.Pointer[PartitionTable]
	stop  chan struct{}
	ctx   context.Context // ends at Close: no commit outlives the keeper
	quit  context.CancelFunc
	wg    sync.WaitGroup
	once  sync.Once

	mu      sync.Mutex
	history map[uint64]adopted // epoch → the table adopted, the last historyLen
	// observed is the store version of the table value a lease renewal
	// last brought: renewals every half second bring the same value again
	// and again, which need not be decoded again.
	observed atomic.Uint64
	// changed is closed (and replaced) when a newer table is adopted.
	changed chan struct{}
}

// MaxBackups is the most backups a partition may have.
const MaxBackups = 2

// maxPartitions bounds a table: the table is one value in the consistent
// store, whose values are at most 1 MiB.
const maxPartitions = 10_000

// DefaultTableConfig is the table's defaults: DefaultPartitions, one
// backup, re-checked every second. Validate fills the zero settings from
// it, except Backups, whose zero means none.
func DefaultTableConfig() TableConfig {
	return TableConfig{Partitions: DefaultPartitions, Backups: 1, Interval: time.Second}
}

// Validate fills the zero settings from DefaultTableConfig and rejects
// nonsense (a refused setting is a *config.FieldError). It does not look
// at Node and Store.
func (c *TableConfig) Validate() error {
	if c.Backups < 0 || c.Backups > MaxBackups {
		return config.Invalid("l2cache", "Backups", c.Backups, "0, 1 or 2")
	}
	if c.Partitions < 0 || c.Partitions > maxPartitions {
		return config.Invalid("l2cache", "Partitions", c.Partitions, fmt.Sprintf("1 to %d (0: the default)", maxPartitions))
	}
	d := DefaultTableConfig()
	fill(&c.Partitions, d.Partitions)
	if c.Interval <= 0 {
		c.Interval = d.Interval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// NewTableKeeper starts the keeper. Close stops it. A cfg that Validate
// refuses is an error.
func NewTableKeeper(cfg TableConfig) (*TableKeeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Node == nil || cfg.Store == nil {
		return nil, errors.New("l2cache: TableConfig.Node and TableConfig.Store are required")
	}
	k := &TableKeeper{cfg: cfg, stop: make(chan struct{}), history: map[uint64]adopted{}, changed: make(chan struct{})}
	k.ctx, k.quit = context.WithCancel(context.Background())
	k.table.Store(&PartitionTable{})
	w := cfg.Store.Watch(TableKey)
	sub := cfg.Node.Subscribe()
	k.wg.Add(1)
	go k.run(w, sub)
	return k, nil
}

// Table is this node's latest copy of the table; its Epoch is 0 until one
// has been committed.
func (k *TableKeeper) Table() *PartitionTable { return k.table.Load() }

// Close stops the keeper. Safe to call twice.
func (k *TableKeeper) Close() {
	k.once.Do(func() { close(k.stop); k.quit() })
	k.wg.Wait()
}

func (k *TableKeeper) run(w *cp.Watch, sub *cluster.Subscription) {
	defer k.wg.Done()
	defer w.Close()
	defer sub.Close()
	if kv, err := k.cfg.Store.StaleGet(TableKey); err == nil {
		k.adopt(kv.Value)
	}
	t := beat.NewTicker(k.cfg.Interval) // on the process's beat: see package beat
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case e, ok := <-w.C():
			if !ok {
				return
			}
			k.adopt(e.Value)
			continue
		case <-sub.C():
		case <-t.C:
		}
		if k.cfg.Store.Status().Role == "leader" && !k.inLine() {
			if err := k.rebalance(); err != nil && !errors.Is(err, cp.ErrVersionMismatch) {
				k.cfg.Logger.Warn("l2cache: committing the partition table", "err", err)
			}
		}
	}
}

func (k *TableKeeper) adopt(b []byte) {
	var t PartitionTable
	if err := msgpack.Unmarshal(b, &t); err != nil {
		k.cfg.Logger.Error("l2cache: unreadable partition table", "err", err)
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur := k.table.Load(); t.Epoch > cur.Epoch {
		k.history[t.Epoch] = adopted{t: &t, at: k.cfg.Now()}
		if len(k.history) > historyLen {
			delete(k.history, slices.Min(slices.Collect(maps.Keys(k.history))))
		}
		k.table.Store(&t)
		close(k.changed)
		k.changed = make(chan struct{})
	}
}

// Changed returns a channel that is closed when the keeper adopts a newer
// table than the one Table returns now (ask for it before reading the
// table): a loop that waits on it instead of polling Table sleeps while
// the table stays as it is.
func (k *TableKeeper) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

// Observe adopts the table from a read lease's renewal, so that a node
// whose lease is valid routes and owns by a table at least as new as the
// one the renewal read.
func (k *TableKeeper) Observe(kvs []cp.KV) {
	for _, kv := range kvs {
		if kv.Key == TableKey && (kv.Version == 0 || k.observed.Swap(kv.Version) != kv.Version) {
			k.adopt(kv.Value)
		}
	}
}

// AdoptedAt is the table of epoch e and when this node adopted it.
func (k *TableKeeper) AdoptedAt(e uint64) (*PartitionTable, time.Time, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a, ok := k.history[e]
	return a.t, a.at, ok
}

// RoleAt is member's role in partition p in the table of epoch e, if this
// node adopted it.
func (k *TableKeeper) RoleAt(p int, member string, e uint64) (owner, backup, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a, ok := k.history[e]
	if !ok {
		return false, false, false
	}
	owner, backup = roles(a.t, p, member)
	return owner, backup, true
}

// OwnerSince is the first epoch of the run of adopted epochs, none
// missing, ending at e in which partition p had the owner it has at e (e+1
// if e was never adopted here).
func (k *TableKeeper) OwnerSince(p int, e uint64) uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	a, ok := k.history[e]
	if !ok {
		return e + 1
	}
	owner := a.t.Owner(p)
	start := e
	for start > 1 {
		prev, ok := k.history[start-1]
		if !ok || prev.t.Owner(p) != owner {
			break
		}
		start--
	}
	return start
}

// RunStart looks back from epoch e at the role (owner, backup or neither)
// member has in partition p, and returns the first epoch of the run of
// epochs, all adopted by this node and none missing, in which it had that
// role at p, with the time it adopted that epoch. If e itself was never
// adopted here, it returns e+1 and the zero time: no run is known.
func (k *TableKeeper) RunStart(p int, member string, e uint64) (uint64, time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	a, ok := k.history[e]
	if !ok {
		return e + 1, time.Time{}
	}
	ow, bk := roles(a.t, p, member)
	start, at := e, a.at
	for start > 1 {
		prev, ok := k.history[start-1]
		if !ok {
			break
		}
		if o, b := roles(prev.t, p, member); o != ow || b != bk {
			break
		}
		start, at = start-1, prev.at
	}
	return start, at
}

// inLine reports whether the table this node adopted already uses
// exactly the alive members: then the leader has nothing to commit, and
// skips rebalance's linearizable read (a quorum round every Interval on an
// idle cluster). A committed table newer than the adopted one reaches
// this node through its watch, and the next check (on the next membership
// change or tick) compares the alive members with it.
func (k *TableKeeper) inLine() bool {
	t := k.table.Load()
	return t.Epoch > 0 && len(t.Replicas) == k.cfg.Partitions && slices.Equal(k.aliveMembers(), tableMembers(t))
}

func (k *TableKeeper) aliveMembers() []string {
	var alive []string
	for _, m := range k.cfg.Node.Members() {
		if m.State == cluster.StateAlive {
			alive = append(alive, m.Name)
		}
	}
	return alive
}

// rebalance commits a new table if the alive members are not exactly the
// ones the current table uses.
func (k *TableKeeper) rebalance() error {
	ctx, cancel := context.WithTimeout(k.ctx, 5*time.Second)
	defer cancel()
	var prev *PartitionTable
	var version uint64
	kv, err := k.cfg.Store.Get(ctx, TableKey)
	switch {
	case err == nil:
		var t PartitionTable
		if err := msgpack.Unmarshal(kv.Value, &t); err != nil {
			return fmt.Errorf("unreadable partition table: %w", err)
		}
		prev, version = &t, kv.Version
	case !errors.Is(err, cp.ErrNotFound):
		return err
	}
	alive := k.aliveMembers()
	if prev != nil && slices.Equal(alive, tableMembers(prev)) {
		return nil
	}
	next := ComputeTable(prev, alive, k.cfg.Partitions, k.cfg.Backups)
	b, err := msgpack.Marshal(&next)
	if err != nil {
		return err
	}
	if _, err := k.cfg.Store.CompareAndSet(ctx, TableKey, version, b); err != nil {
		return err
	}
	k.cfg.Logger.Info("l2cache: committed a partition table", "epoch", next.Epoch, "members", alive)
	return nil
}

// tableMembers lists the members a table uses, sorted.
func tableMembers(t *PartitionTable) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range t.Replicas {
		for _, m := range r {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}
