package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/localcluster"
	"github.com/shoal-dev/shoal/internal/netns"
	"github.com/shoal-dev/shoal/internal/pgserver"
)

// adminPassword is the seeded administrator's password in the runs.
const adminPassword = "chaos-Adm1n-pw"

// Env is one setting's running cluster, as fault injectors see it.
type Env struct {
	cfg     Config
	setting Setting
	dir     string
	lc      *localcluster.Cluster
	net     *netns.Net       // nil without partitions
	hosts   []*netns.Host    // node i is hosts[i-1]
	addrs   []string         // node i's HTTP address is addrs[i-1], stable across restarts
	client  *http.Client     // the workload's
	probe   *http.Client     // short timeouts, for leader lookups and recovery probes
	rec     *recorder        // the history
	partErr error            // why partitions are skipped, or nil
	pg      *pgserver.Server // the shared PostgreSQL server (Config.Postgres), or nil
	dbURL   string           // the nodes' database: pg's URL, or the SQLite file
	leaders *leaderWatch     // who claimed leadership in which term

	// faultMu is held while a fault is in place, so that the git
	// checker's kill after a push never overlaps a scheduled fault.
	faultMu sync.Mutex

	mu     sync.Mutex
	down   map[int]string // nodes a fault has stopped: why
	extras []*FaultRecord // faults outside the schedule (the git checker's kills)
}

// Nodes is the cluster size.
func (e *Env) Nodes() int { return len(e.addrs) }

// HTTP is node i's (1-based) HTTP address.
func (e *Env) HTTP(i int) string { return e.addrs[i-1] }

// Setting is the setting under test.
func (e *Env) Setting() Setting { return e.setting }

// PartitionsAvailable says why partitions cannot run, or nil.
func (e *Env) PartitionsAvailable() error { return e.partErr }

// Admin sends a request to node i as the seeded administrator and returns
// the status and body (for fault kinds that change settings through the
// admin API, such as a cache-mode switch).
func (e *Env) Admin(ctx context.Context, i int, method, path string, body []byte) (int, []byte, error) {
	return doReq(ctx, e.probe, method, "http://"+e.HTTP(i)+path, body, true)
}

// SetStrict records that from now on the cluster promises (strict) or
// does not promise never-stale reads, for fault kinds that change the
// cache's setting; the stale-read checker judges a read strictly only if
// the promise held from the write's acknowledgement to the read's start.
func (e *Env) SetStrict(strict bool) { e.rec.setStrict(time.Now(), strict) }

// markDown and markUp track which nodes a fault has stopped.
func (e *Env) markDown(i int, why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.down[i] = why
}

func (e *Env) markUp(i int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.down, i)
}

// addFault records a fault injected outside the schedule.
func (e *Env) addFault(f *FaultRecord) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.extras = append(e.extras, f)
}

// upNodes are the nodes no fault has stopped.
func (e *Env) upNodes() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []int
	for i := 1; i <= e.Nodes(); i++ {
		if _, ok := e.down[i]; !ok {
			out = append(out, i)
		}
	}
	return out
}

// startEnv seeds a database in dir and starts the cluster.
// On error nothing it started is left running.
func startEnv(ctx context.Context, cfg Config, s Setting, dir string) (_ *Env, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	e := &Env{cfg: cfg, setting: s, dir: dir, down: map[int]string{}, dbURL: filepath.Join(dir, "shoal.db"),
		client: &http.Client{Timeout: 8 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}},
		probe:  &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
	}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	key, err := cluster.GenerateGossipKey()
	if err != nil {
		return nil, err
	}
	opts := localcluster.Options{
		// Nodes in network namespaces bind addresses beyond loopback,
		// where a node refuses to run without gossip encryption.
		GossipKey: cluster.EncodeGossipKey(key),
		Binary:    cfg.Binary, N: cfg.Nodes, Dir: dir, CacheMode: s.CacheMode, LogLevel: "info", Preset: cfg.Preset,
		BootstrapExpect: cfg.Nodes, WatchParent: true, ReadyTimeout: 120 * time.Second, KeepAddrs: true,
		// Every node serves the same repositories from one folder (on
		// several machines, a shared file system).
		Args: []string{"--invalidation", s.Invalidation, "--pack-cache-min-free", "0", "--repos-dir", filepath.Join(dir, "repos")},
	}
	e.partErr = netns.Available()
	if cfg.Partitions == "off" {
		e.partErr = errors.New("partitions turned off (--partitions off)")
	}
	if e.partErr == nil {
		if e.net, err = netns.New(ctx, netns.Config{}); err != nil {
			if cfg.Partitions == "on" {
				return nil, err
			}
			e.partErr, e.net = err, nil
		}
	} else if cfg.Partitions == "on" {
		return nil, e.partErr
	}
	if e.net != nil {
		for i := 1; i <= cfg.Nodes; i++ {
			h, err := e.net.AddHost(ctx, "n"+strconv.Itoa(i))
			if err != nil {
				e.net.Close()
				return nil, err
			}
			e.hosts = append(e.hosts, h)
		}
		if cfg.Postgres {
			// The database on a host of its own, as on another machine:
			// a partition cuts nodes from each other, never from it.
			h, err := e.net.AddHost(ctx, "pg")
			if err != nil {
				return nil, err
			}
			if e.pg, err = pgserver.Start(ctx, h, e.net.Subnet().String()); err != nil {
				return nil, err
			}
		}
		opts.IP = func(i int) string { return e.hosts[i-1].Addr.String() }
		// Each node has its own network stack: fixed ports cannot collide
		// (and the launcher cannot pick free ones from this namespace).
		opts.BasePort, opts.HTTPBase = 7946, 8080
		opts.Command = func(i int, name string, args ...string) *exec.Cmd { return e.hosts[i-1].Command(name, args...) }
		// Beyond loopback a node runs only secured: mutual TLS between
		// the nodes, with certificates made here.
		opts.TLSDir = filepath.Join(dir, "tls")
	} else {
		opts.IP = func(int) string { return "127.0.0.1" }
		if cfg.Postgres {
			if e.pg, err = pgserver.Start(ctx, nil, ""); err != nil {
				return nil, err
			}
		}
	}
	seed := []string{"seed", "--data-dir", dir, "--repos-dir", filepath.Join(dir, "repos"), "--admin-password", adminPassword,
		"--users", "6", "--projects", "2", "--repos-per-project", "2", "--prs-per-repo", "12", "--comments-per-pr", "2"}
	if e.pg != nil {
		e.dbURL = e.pg.URL("shoal")
		seed = append(seed, "--db", e.dbURL)
		opts.Args = append(opts.Args, "--db", e.dbURL)
	}
	opts.Args = append(opts.Args, cfg.ExtraArgs...)
	if out, err := exec.CommandContext(ctx, cfg.Binary, seed...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("shoal seed: %v\n%s", err, out)
	}
	e.lc, err = localcluster.Start(ctx, opts)
	if err != nil {
		e.lc = nil
		return nil, err
	}
	for _, p := range e.lc.Nodes() {
		e.addrs = append(e.addrs, p.HTTP)
	}
	if err := e.waitServing(ctx, 120*time.Second); err != nil {
		return nil, err
	}
	return e, nil
}

// Close stops the nodes and the database server and removes the
// namespaces. Safe twice.
func (e *Env) Close() {
	if e.lc != nil {
		e.lc.Stop(15 * time.Second)
	}
	if e.pg != nil {
		e.pg.Stop()
	}
	e.closeNet()
	e.client.CloseIdleConnections()
	e.probe.CloseIdleConnections()
}

func (e *Env) closeNet() {
	if e.net != nil {
		e.net.Close()
	}
}

// postgres says whether the nodes share a PostgreSQL server.
func (e *Env) postgres() bool { return e.pg != nil }

// clusterView is the part of /v1/cluster the checker reads.
type clusterView struct {
	Members []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"members"`
	Raft struct {
		Leader string `json:"leader"`
		Term   uint64 `json:"term"`
		Role   string `json:"role"`
	} `json:"raft"`
}

func (e *Env) view(ctx context.Context, i int) (*clusterView, error) {
	code, body, err := doReq(ctx, e.probe, http.MethodGet, "http://"+e.HTTP(i)+"/v1/cluster", nil, true)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("node%d /v1/cluster: %d %s", i, code, bytes.TrimSpace(body))
	}
	var v clusterView
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("node%d /v1/cluster: %w", i, err)
	}
	return &v, nil
}

// Leader is the raft leader's node number, as the running nodes see it.
func (e *Env) Leader(ctx context.Context) (int, error) {
	var last error
	for _, i := range e.upNodes() {
		v, err := e.view(ctx, i)
		if err != nil {
			last = err
			continue
		}
		if n, ok := nodeNumber(v.Raft.Leader); ok {
			return n, nil
		}
		last = fmt.Errorf("node%d knows no leader", i)
	}
	if last == nil {
		last = errors.New("no node running")
	}
	return 0, last
}

// waitLeader polls until a leader is known, up to d.
func (e *Env) waitLeader(ctx context.Context, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		n, err := e.Leader(ctx)
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("no raft leader within %v: %w", d, err)
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func nodeNumber(name string) (int, bool) {
	var n int
	if _, err := fmt.Sscanf(name, "node%d", &n); err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// waitServing polls until every node is ready, sees every member alive
// and a leader, and answers a pull request read and a kv read.
func (e *Env) waitServing(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for i := 1; i <= e.Nodes(); i++ {
		for {
			err := e.serving(ctx, i)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("node%d not serving within %v: %w; its log ends:\n%s", i, d, err,
					localcluster.Tail(e.lc.Nodes()[i-1].Log, 10))
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
	return nil
}

func (e *Env) serving(ctx context.Context, i int) error {
	v, err := e.view(ctx, i)
	if err != nil {
		return err
	}
	alive := 0
	for _, m := range v.Members {
		if m.State == "alive" {
			alive++
		}
	}
	if alive != e.Nodes() || v.Raft.Leader == "" {
		return fmt.Errorf("sees %d alive members, leader %q", alive, v.Raft.Leader)
	}
	code, body, err := doReq(ctx, e.probe, http.MethodGet, "http://"+e.HTTP(i)+"/readyz", nil, false)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("readyz: %d %s %v", code, bytes.TrimSpace(body), err)
	}
	code, body, err = doReq(ctx, e.probe, http.MethodGet, "http://"+e.HTTP(i)+"/v1/kv/chaos/probe", nil, true)
	if err != nil || (code != http.StatusOK && code != http.StatusNotFound) {
		return fmt.Errorf("kv read: %d %s %v", code, bytes.TrimSpace(body), err)
	}
	code, body, err = doReq(ctx, e.probe, http.MethodGet, "http://"+e.HTTP(i)+api+"/projects?limit=1", nil, true)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("REST read: %d %s %v", code, bytes.TrimSpace(body), err)
	}
	return nil
}

// doReq sends one request; admin adds the seeded administrator's
// credentials. The body is read whole (bounded).
func doReq(ctx context.Context, c *http.Client, method, url string, body []byte, admin bool) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if admin {
		req.SetBasicAuth("admin", adminPassword)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, b, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
