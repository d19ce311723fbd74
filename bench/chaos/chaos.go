// Package chaos is shoal's fault-injection consistency checker ('shoal
// bench chaos'). It starts real 'shoal node' processes over one seeded
// SQLite database, runs writers and readers against the REST API and the
// kv API through every node, injects faults from a schedule, and checks
// from outside, as a user would, what the cache and the store promise:
//
//   - Stale reads. In LOCAL mode with --invalidation sync, and in
//     DISTRIBUTED and NEAR mode, a read that starts after a write was
//     acknowledged never returns older data, from any node: a pull
//     request read must show at least the version of every update
//     acknowledged before the read began, a comment list every comment
//     acknowledged before it began. In LOCAL mode with asynchronous
//     invalidation a read may miss a write for a while; the checker
//     measures that staleness window (from the write's acknowledgement to
//     the start of a read that missed it) and checks it against the
//     documented bound: AsyncBound (the read lease, 2 s by default, after
//     which a node that lost contact serves nothing from its cache, plus
//     a second for the bus) after the acknowledgement — or, when the
//     write was acknowledged while a fault was in place (or just before),
//     AsyncBound after that fault was healed: an invalidation sent on the
//     asynchronous bus by a node cut off from the readers is lost, and the
//     readers, which still hold their leases, learn that they missed it
//     only when the link comes back (the bus then reports the gap and they
//     clear the region).
//   - Linearizability of the kv history (put, get and compare-and-set on a
//     few keys through every node), with porcupine; a request whose
//     outcome is unknown (timeout, connection lost, 5xx) is an open call
//     that may take effect at any later point or never.
//   - Acknowledged writes present at the end: every acknowledged pull
//     request update and comment is in the database, every acknowledged kv
//     write is accounted for by the linearizability check (a final read of
//     every key through every node closes the history).
//   - Cached values equal their rows once the cluster has settled: each
//     tracked pull request and comment list read through every node equals
//     the database.
//   - The scheduler runs each fire time of a once-per-cluster job at most
//     once (the kv.record-run runner leaves one key per run).
//   - git, with --git: after each acknowledged push the refs every node
//     advertises equal the repository's on disk, including pushes through
//     a node that is killed right after acknowledging.
//
// Faults come from a schedule (Profile): SIGSTOP/SIGCONT of a node, SIGKILL
// and restart of a raft follower, of the raft leader and of the owner of a
// tracked key's partition (DISTRIBUTED and NEAR), a whole-cluster restart,
// and, when run as root with ip and nft, network partitions (each node in
// its own network namespace; symmetric, and one-way). Without root the
// partition faults are skipped, and the report says so. New kinds of fault
// are added with RegisterFault (a live cache-mode switch, for example).
//
// A new kind of fault is an Injector registered under a name that
// schedules (and --fault KIND:HOLD) can use. A live cache-mode switch, for
// example, would send PUT /v1/cache/mode through Env.Admin, call
// Env.SetStrict(false) while the switch may serve stale data if the
// switch's promise is weaker than either mode's, and return an Injected
// whose Heal switches back (or does nothing) and calls Env.SetStrict with
// what the resulting mode promises; the stale-read checker judges each
// read strictly only if the promise held from the write's acknowledgement
// to the read's start.
//
// The report counts operations, lists violations each with the operations
// involved, the error window of each fault (failed operations from its
// start until the cluster answered again) and its recovery time.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Setting is a cache mode and invalidation setting under test, with what
// it promises.
type Setting struct {
	Name         string `json:"name"`
	CacheMode    string `json:"cache_mode"`
	Invalidation string `json:"invalidation"`
	// Strict: a read that starts after a write was acknowledged never
	// returns older data. Otherwise staleness is bounded by AsyncBound.
	Strict bool `json:"strict"`
}

// Settings are the settings the checker knows, by name.
var Settings = []Setting{
	{Name: "local-async", CacheMode: "local", Invalidation: "async"},
	{Name: "local-sync", CacheMode: "local", Invalidation: "sync", Strict: true},
	{Name: "distributed", CacheMode: "distributed", Invalidation: "async", Strict: true},
	{Name: "distributed-sync", CacheMode: "distributed", Invalidation: "sync", Strict: true},
	{Name: "near", CacheMode: "near", Invalidation: "async", Strict: true},
}

// SettingByName finds a setting.
func SettingByName(name string) (Setting, bool) {
	for _, s := range Settings {
		if s.Name == name {
			return s, true
		}
	}
	return Setting{}, false
}

// AsyncBound is the documented staleness bound of LOCAL mode with
// asynchronous invalidation under faults: the read lease (--cache-lease,
// 2 s by default: a node that stops hearing from the cluster serves
// nothing from its cache after it) plus one second for the bus.
const AsyncBound = 3 * time.Second

// Profile is a run's schedule.
type Profile struct {
	Name string `json:"name"`
	// Settings are run one after the other, each on a fresh cluster.
	Settings []string `json:"settings"`
	// Warmup is load without faults before the first fault.
	Warmup time.Duration `json:"warmup"`
	// Faults are injected in order, Gap apart (from one fault's recovery
	// to the next fault); Tail is load after the last.
	Faults []Fault        `json:"faults"`
	Gap    time.Duration  `json:"gap"`
	Tail   time.Duration  `json:"tail"`
	Git    bool           `json:"git"`
	Load   LoadParameters `json:"load"`
}

// LoadParameters size the workload.
type LoadParameters struct {
	// PRWriters and CommentWriters each own a share of the tracked pull
	// requests; ReadersPerNode read through each node; KVClientsPerNode
	// run kv operations through each node.
	PRWriters, CommentWriters, ReadersPerNode, KVClientsPerNode int
	// KVKeys is how many kv keys the clients share.
	KVKeys int
	// Pace is the pause between one client's operations.
	Pace time.Duration
	// Abandon is the share of the pull request and comment writes whose
	// client gives up on the request a random 0 to AbandonAfter after
	// sending it, without waiting for its answer: the node may be in the
	// middle of committing it. The write's outcome is unknown to the
	// client, and need not be to the node: the cache must still agree
	// with the database once the run settles (the settle check). Counted
	// apart, as pr-update-abandoned and comment-add-abandoned.
	Abandon float64
	// AbandonAfter bounds when an abandoned write is given up (default
	// 10 ms: about a write's time at the node).
	AbandonAfter time.Duration
}

// Profiles are the built-in schedules.
var Profiles = map[string]Profile{
	"short": {
		Name:     "short",
		Settings: []string{"local-sync", "distributed", "near"},
		Warmup:   3 * time.Second,
		Faults: []Fault{
			{Kind: FaultPause, Hold: 3 * time.Second},
			{Kind: FaultKillLeader, Hold: 2 * time.Second},
			{Kind: FaultPartition, Hold: 3 * time.Second},
			{Kind: FaultKillFollower, Hold: 2 * time.Second},
			{Kind: FaultModeSwitch, Hold: 4 * time.Second},
		},
		Gap:  3 * time.Second,
		Tail: 2 * time.Second,
		Git:  true,
		Load: LoadParameters{PRWriters: 2, CommentWriters: 1, ReadersPerNode: 2, KVClientsPerNode: 1, KVKeys: 12, Pace: 10 * time.Millisecond, Abandon: 0.05},
	},
	"long": {
		Name:     "long",
		Settings: []string{"local-async", "local-sync", "distributed", "near"},
		Warmup:   5 * time.Second,
		Faults: []Fault{
			{Kind: FaultPause, Hold: 3 * time.Second},
			{Kind: FaultKillFollower, Hold: 2 * time.Second},
			{Kind: FaultPartition, Hold: 4 * time.Second},
			{Kind: FaultKillLeader, Hold: 2 * time.Second},
			{Kind: FaultKillOwner, Hold: 2 * time.Second},
			{Kind: FaultPartitionOneWay, Hold: 4 * time.Second},
			{Kind: FaultPause, Hold: 5 * time.Second},
			{Kind: FaultRestartAll, Hold: time.Second},
			{Kind: FaultPartitionLeader, Hold: 4 * time.Second},
			{Kind: FaultKillLeader, Hold: 4 * time.Second},
			{Kind: FaultPause, Hold: 1500 * time.Millisecond},
			{Kind: FaultKillOwner, Hold: 4 * time.Second},
			{Kind: FaultPartitionOneWay, Hold: 6 * time.Second},
			{Kind: FaultKillFollower, Hold: 5 * time.Second},
			{Kind: FaultPartition, Hold: 8 * time.Second},
			{Kind: FaultPause, Hold: 2 * time.Second},
			{Kind: FaultModeSwitch, Hold: 8 * time.Second},
		},
		Gap:  6 * time.Second,
		Tail: 5 * time.Second,
		Git:  true,
		Load: LoadParameters{PRWriters: 2, CommentWriters: 2, ReadersPerNode: 2, KVClientsPerNode: 2, KVKeys: 24, Pace: 5 * time.Millisecond, Abandon: 0.05},
	},
}

// Config says what to run.
type Config struct {
	// Binary is the shoal executable the nodes run.
	Binary string
	// Dir is the scratch directory (one sub-directory per setting).
	Dir string
	// Nodes is the cluster size (default 3).
	Nodes int
	// Profile is the schedule.
	Profile Profile
	// Partitions: run the partition faults in network namespaces when
	// this machine can ("auto"), always ("on": fail if it cannot), or
	// never ("off").
	Partitions string
	// Seed makes the run's random choices repeatable.
	Seed uint64
	// Log receives progress lines (nil: none).
	Log io.Writer
	// ExtraArgs are passed to every node.
	ExtraArgs []string
	// Preset is the nodes' timing, "loopback" (the default: what
	// 'shoal up' gives nodes on one machine) or "lan" (what nodes on
	// several machines run).
	Preset string
	// Postgres: the nodes share a PostgreSQL server (Debian's
	// postgresql; the run fails without it), in a network namespace of
	// its own when partitions run, instead of one SQLite file.
	Postgres bool
}

// Run runs the profile's settings one after the other and returns the
// report. A violation is in the report, not an error; the error says the
// run itself could not be made.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Nodes < 3 {
		return nil, fmt.Errorf("chaos: %d nodes: want at least 3 (a leader kill needs a quorum left)", cfg.Nodes)
	}
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("chaos: Binary and Dir are required")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	switch cfg.Preset {
	case "":
		cfg.Preset = "loopback"
	case "loopback", "lan":
	default:
		return nil, fmt.Errorf("chaos: preset %q: want loopback or lan", cfg.Preset)
	}
	switch cfg.Partitions {
	case "":
		cfg.Partitions = "auto"
	case "auto", "on", "off":
	default:
		return nil, fmt.Errorf("chaos: partitions %q: want auto, on or off", cfg.Partitions)
	}
	var settings []Setting
	for _, name := range cfg.Profile.Settings {
		s, ok := SettingByName(name)
		if !ok {
			return nil, fmt.Errorf("chaos: unknown setting %q (known: %s)", name, strings.Join(SettingNames(), ", "))
		}
		settings = append(settings, s)
	}
	for _, f := range cfg.Profile.Faults {
		if _, ok := lookupFault(f.Kind); !ok {
			return nil, fmt.Errorf("chaos: unknown fault kind %q", f.Kind)
		}
	}
	rep := &Report{Profile: cfg.Profile.Name, Nodes: cfg.Nodes, Seed: cfg.Seed, Started: time.Now().UTC()}
	rep.LoadBefore = loadAvg()
	for i, s := range settings {
		fmt.Fprintf(cfg.Log, "== %s (%s, --invalidation %s): %d faults\n", s.Name, s.CacheMode, s.Invalidation, len(cfg.Profile.Faults))
		dir := filepath.Join(cfg.Dir, fmt.Sprintf("%02d-%s", i+1, s.Name))
		sr, err := runSetting(ctx, cfg, s, dir, rand.New(rand.NewPCG(cfg.Seed, uint64(i))))
		if sr != nil {
			rep.Settings = append(rep.Settings, sr)
			fmt.Fprintf(cfg.Log, "   %s: %d operations, %d violations\n", s.Name, sr.Ops.Total(), len(sr.Violations))
		}
		if err != nil {
			rep.Finished = time.Now().UTC()
			return rep, fmt.Errorf("%s: %w", s.Name, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Finished = time.Now().UTC()
	rep.LoadAfter = loadAvg()
	return rep, ctx.Err()
}

// SettingNames lists the known settings.
func SettingNames() []string {
	var out []string
	for _, s := range Settings {
		out = append(out, s.Name)
	}
	return out
}

// ProfileNames lists the built-in profiles.
func ProfileNames() []string {
	var out []string
	for n := range Profiles {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// loadAvg is /proc/loadavg's first three fields, or "".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
