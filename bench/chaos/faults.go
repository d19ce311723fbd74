package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoal-dev/shoal/internal/netns"
	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/l2cache"
)

// FaultKind names a kind of fault.
type FaultKind string

// The built-in fault kinds.
const (
	// FaultPause stops a node with SIGSTOP for Hold, then SIGCONT.
	FaultPause FaultKind = "pause"
	// FaultKillFollower SIGKILLs a raft follower and restarts it after Hold.
	FaultKillFollower FaultKind = "kill-follower"
	// FaultKillLeader SIGKILLs the raft leader and restarts it after Hold.
	FaultKillLeader FaultKind = "kill-leader"
	// FaultKillOwner SIGKILLs the owner of a tracked pull request's
	// partition (DISTRIBUTED and NEAR; a follower when one owns a tracked
	// key) and restarts it after Hold. Skipped in LOCAL mode.
	FaultKillOwner FaultKind = "kill-owner"
	// FaultRestartAll SIGKILLs every node, waits Hold, starts them all again.
	FaultRestartAll FaultKind = "restart-all"
	// FaultPartition cuts one node off from the others both ways (root only).
	FaultPartition FaultKind = "partition"
	// FaultPartitionLeader cuts the raft leader off both ways (root only).
	FaultPartitionLeader FaultKind = "partition-leader"
	// FaultPartitionOneWay drops one direction only between a node and the
	// others: its packets out, or the others' packets to it (root only).
	FaultPartitionOneWay FaultKind = "partition-oneway"
	// FaultPartitionMinority cuts the cluster in two both ways: a
	// minority of (N-1)/2 nodes holding the raft leader (2 of 5) from the
	// majority, which must elect a new leader while the old one cannot
	// commit (root only).
	FaultPartitionMinority FaultKind = "partition-minority"
	// FaultKillAfterPush is the git checker's own: the node a push went
	// through is SIGKILLed right after it acknowledged, and restarted
	// once the refs were checked through the others (not for schedules).
	FaultKillAfterPush FaultKind = "kill-after-push"
)

// Fault is one entry of a schedule.
type Fault struct {
	Kind FaultKind `json:"kind"`
	// Hold is how long the fault lasts before it is healed.
	Hold time.Duration `json:"hold"`
}

// Injected is a fault in place.
type Injected struct {
	// Target says what was hit ("node2", "node1 | node2 node3").
	Target string
	// Heal ends the fault; it returns once the nodes are running again
	// (the checker then measures recovery by asking every node).
	Heal func(ctx context.Context) error
	// Detail, if set, is called after the heal for what the report
	// should say of the fault beyond its target.
	Detail func() string
}

// ErrSkipped, wrapped, says an injector cannot run here (no root for
// partitions, no partition owners in LOCAL mode); the run goes on.
var ErrSkipped = errors.New("skipped")

// Injector puts a fault in place.
type Injector func(ctx context.Context, e *Env, rng *rand.Rand, f Fault) (*Injected, error)

var (
	faultMu    sync.Mutex
	faultKinds = map[FaultKind]Injector{
		FaultPause:             injectPause,
		FaultKillFollower:      injectKill(pickFollower),
		FaultKillLeader:        injectKill(pickLeader),
		FaultKillOwner:         injectKill(pickOwner),
		FaultRestartAll:        injectRestartAll,
		FaultPartition:         injectPartition(false, false),
		FaultPartitionLeader:   injectPartition(true, false),
		FaultPartitionOneWay:   injectPartition(false, true),
		FaultPartitionMinority: injectPartitionMinority,
	}
)

// RegisterFault adds a kind of fault (or replaces one), for schedules to
// name: a live cache-mode switch, say, injected through Env.Admin, with
// Env.SetStrict recording what the new mode promises.
func RegisterFault(kind FaultKind, inj Injector) {
	faultMu.Lock()
	defer faultMu.Unlock()
	faultKinds[kind] = inj
}

func lookupFault(kind FaultKind) (Injector, bool) {
	faultMu.Lock()
	defer faultMu.Unlock()
	inj, ok := faultKinds[kind]
	return inj, ok
}

// FaultKinds lists the registered kinds.
func FaultKinds() []string {
	faultMu.Lock()
	defer faultMu.Unlock()
	var out []string
	for k := range faultKinds {
		out = append(out, string(k))
	}
	slices.Sort(out)
	return out
}

func injectPause(ctx context.Context, e *Env, rng *rand.Rand, f Fault) (*Injected, error) {
	up := e.upNodes()
	if len(up) == 0 {
		return nil, errors.New("no node running")
	}
	i := up[rng.IntN(len(up))]
	if err := e.lc.Pause(i); err != nil {
		return nil, err
	}
	e.markDown(i, "paused")
	return &Injected{Target: "node" + strconv.Itoa(i), Heal: func(context.Context) error {
		err := e.lc.Resume(i)
		e.markUp(i)
		return err
	}}, nil
}

type picker func(ctx context.Context, e *Env, rng *rand.Rand) (int, string, error)

func pickLeader(ctx context.Context, e *Env, _ *rand.Rand) (int, string, error) {
	l, err := e.waitLeader(ctx, 20*time.Second)
	return l, "leader", err
}

func pickFollower(ctx context.Context, e *Env, rng *rand.Rand) (int, string, error) {
	l, err := e.waitLeader(ctx, 20*time.Second)
	if err != nil {
		return 0, "", err
	}
	var fs []int
	for _, i := range e.upNodes() {
		if i != l {
			fs = append(fs, i)
		}
	}
	if len(fs) == 0 {
		return 0, "", errors.New("no follower running")
	}
	return fs[rng.IntN(len(fs))], "follower", nil
}

// pickOwner finds the owner of a tracked pull request's partition in the
// table the cluster committed, preferring one that is not the leader.
func pickOwner(ctx context.Context, e *Env, rng *rand.Rand) (int, string, error) {
	if e.setting.CacheMode == "local" {
		return 0, "", fmt.Errorf("%w: no partition owners in LOCAL mode", ErrSkipped)
	}
	l, err := e.waitLeader(ctx, 20*time.Second)
	if err != nil {
		return 0, "", err
	}
	t, err := e.partitionTable(ctx)
	if err != nil {
		return 0, "", err
	}
	prs := e.rec.trackedPRs()
	rng.Shuffle(len(prs), func(a, b int) { prs[a], prs[b] = prs[b], prs[a] })
	fallback := 0
	for _, pr := range prs {
		p := l2cache.PartitionOf(rest.RegionPullRequests, strconv.FormatInt(pr, 10), len(t.Replicas))
		n, ok := nodeNumber(t.Owner(p))
		if !ok {
			continue
		}
		if n != l {
			return n, fmt.Sprintf("owner of pull request %d's partition %d", pr, p), nil
		}
		if fallback == 0 {
			fallback = n
		}
	}
	if fallback != 0 {
		return fallback, "owner (the leader)", nil
	}
	return 0, "", errors.New("no tracked pull request has an owner in the partition table")
}

func (e *Env) partitionTable(ctx context.Context) (*l2cache.PartitionTable, error) {
	var last error
	for _, i := range e.upNodes() {
		code, body, err := doReq(ctx, e.probe, http.MethodGet, "http://"+e.HTTP(i)+"/v1/kv/"+l2cache.TableKey, nil, true)
		if err != nil || code != http.StatusOK {
			last = fmt.Errorf("node%d: %d %v", i, code, err)
			continue
		}
		var kv struct {
			Value       string `json:"value"`
			ValueBase64 []byte `json:"value_base64"`
		}
		if err := json.Unmarshal(body, &kv); err != nil {
			return nil, err
		}
		raw := kv.ValueBase64
		if raw == nil {
			raw = []byte(kv.Value)
		}
		var t l2cache.PartitionTable
		if err := msgpack.Unmarshal(raw, &t); err != nil {
			return nil, fmt.Errorf("the partition table: %w", err)
		}
		if len(t.Replicas) == 0 {
			return nil, errors.New("the partition table is empty")
		}
		return &t, nil
	}
	return nil, fmt.Errorf("reading the partition table: %w", last)
}

func injectKill(pick picker) Injector {
	return func(ctx context.Context, e *Env, rng *rand.Rand, f Fault) (*Injected, error) {
		i, role, err := pick(ctx, e, rng)
		if err != nil {
			return nil, err
		}
		if err := e.lc.Kill(i); err != nil {
			return nil, err
		}
		e.markDown(i, "killed")
		return &Injected{Target: fmt.Sprintf("node%d (%s)", i, role), Heal: func(ctx context.Context) error {
			return e.restart(ctx, i)
		}}, nil
	}
}

// restart starts killed node i again, joining a running node.
func (e *Env) restart(ctx context.Context, i int) error {
	join := 0
	for _, j := range e.upNodes() {
		if j != i {
			join = j
			break
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	if _, err := e.lc.Restart(ctx, i, join); err != nil {
		return err
	}
	e.markUp(i)
	return nil
}

func injectRestartAll(ctx context.Context, e *Env, _ *rand.Rand, f Fault) (*Injected, error) {
	for i := 1; i <= e.Nodes(); i++ {
		if err := e.lc.Kill(i); err != nil {
			return nil, err
		}
		e.markDown(i, "killed")
	}
	return &Injected{Target: "every node", Heal: func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 180*time.Second)
		defer cancel()
		if err := e.lc.RestartAll(ctx); err != nil {
			return err
		}
		for i := 1; i <= e.Nodes(); i++ {
			e.markUp(i)
		}
		return nil
	}}, nil
}

func injectPartition(leader, oneWay bool) Injector {
	return func(ctx context.Context, e *Env, rng *rand.Rand, f Fault) (*Injected, error) {
		if e.net == nil {
			return nil, fmt.Errorf("%w: %v", ErrSkipped, e.partErr)
		}
		var i int
		if leader {
			var err error
			if i, err = e.waitLeader(ctx, 20*time.Second); err != nil {
				return nil, err
			}
		} else {
			up := e.upNodes()
			if len(up) == 0 {
				return nil, errors.New("no node running")
			}
			i = up[rng.IntN(len(up))]
		}
		self := []*netns.Host{e.hosts[i-1]}
		var others []*netns.Host
		var names string
		for j, h := range e.hosts {
			if j != i-1 {
				others = append(others, h)
				names += " node" + strconv.Itoa(j+1)
			}
		}
		var err error
		var target string
		switch {
		case !oneWay:
			err = e.net.Partition(ctx, self, others)
			target = fmt.Sprintf("node%d |%s", i, names)
		case rng.IntN(2) == 0:
			err = e.net.Block(ctx, self, others)
			target = fmt.Sprintf("node%d ->X%s (its packets out dropped)", i, names)
		default:
			err = e.net.Block(ctx, others, self)
			target = fmt.Sprintf("%s X-> node%d (packets to it dropped)", names[1:], i)
		}
		if leader {
			target += " (leader)"
		}
		if err != nil {
			e.net.Heal(ctx)
			return nil, err
		}
		return &Injected{Target: target, Heal: func(ctx context.Context) error { return e.net.Heal(ctx) }}, nil
	}
}

// injectPartitionMinority cuts the leader and (N-1)/2-1 other nodes,
// picked at random, from the rest.
func injectPartitionMinority(ctx context.Context, e *Env, rng *rand.Rand, f Fault) (*Injected, error) {
	if e.net == nil {
		return nil, fmt.Errorf("%w: %v", ErrSkipped, e.partErr)
	}
	l, err := e.waitLeader(ctx, 20*time.Second)
	if err != nil {
		return nil, err
	}
	var rest []int
	for i := 1; i <= e.Nodes(); i++ {
		if i != l {
			rest = append(rest, i)
		}
	}
	rng.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
	minority := append([]int{l}, rest[:(e.Nodes()-1)/2-1]...)
	majority := rest[(e.Nodes()-1)/2-1:]
	slices.Sort(minority)
	slices.Sort(majority)
	group := func(nodes []int) ([]*netns.Host, string) {
		var hs []*netns.Host
		var names []string
		for _, i := range nodes {
			hs = append(hs, e.hosts[i-1])
			names = append(names, "node"+strconv.Itoa(i))
		}
		return hs, strings.Join(names, " ")
	}
	a, an := group(minority)
	b, bn := group(majority)
	if err := e.net.Partition(ctx, a, b); err != nil {
		e.net.Heal(ctx)
		return nil, err
	}
	return &Injected{Target: fmt.Sprintf("%s | %s (node%d, the leader, in the minority)", an, bn, l),
		Heal: func(ctx context.Context) error { return e.net.Heal(ctx) }}, nil
}
