package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// The clone storm: N concurrent real 'git clone' processes against a
// cluster of real 'shoal node' processes, with the pack cache off, cold
// and warm, and against the plain 'git http-backend' behind Go's
// net/http/cgi as the baseline, all in one run on one generated
// repository.

// Clone storm modes.
const (
	ModeBaseline = "baseline" // git http-backend under net/http/cgi
	ModeOff      = "off"      // shoal, --pack-cache=false
	ModeCold     = "cold"     // shoal, pack cache empty at the start
	ModeWarm     = "warm"     // shoal, the same storm again
)

// ClonesOptions configures Clones.
type ClonesOptions struct {
	// Binary is the shoal executable (it runs the nodes and the baseline
	// server).
	Binary string
	// Dir is a scratch directory.
	Dir string
	// Nodes is the cluster size (default 1); Spread sends clone i to node
	// i mod Nodes, otherwise every clone goes to node 1.
	Nodes  int
	Spread bool
	// Clones is the number of concurrent clones in a storm (default 16).
	Clones int
	// Depth, if positive, makes shallow clones (--depth).
	Depth int
	// Protocol is the git protocol version the clients use: "0", "1"
	// or "2" (default "2", git's default).
	Protocol string
	// Repo sizes the generated repository; RepoDir is where it is kept
	// between runs (default a directory in os.TempDir() named by its size).
	Repo    RepoSize
	RepoDir string
	// Modes are run in this order (default baseline, off, cold, warm).
	Modes []string
	// NodeArgs are extra flags for every node.
	NodeArgs []string
	// Progress, if set, receives a line per step.
	Progress func(string)
}

// RepoSize sizes a generated repository: Files text files in 60
// directories, Commits commits each rewriting part of Changed files.
type RepoSize struct{ Files, Commits, Changed int }

// DefaultRepoSize is the repository of the pack cache benchmarks.
var DefaultRepoSize = RepoSize{Files: 3000, Commits: 200, Changed: 40}

func (o *ClonesOptions) validate() error {
	if o.Binary == "" || o.Dir == "" {
		return errors.New("clones: Binary and Dir are required")
	}
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Clones == 0 {
		o.Clones = 16
	}
	if o.Protocol == "" {
		o.Protocol = "2"
	}
	if o.Repo == (RepoSize{}) {
		o.Repo = DefaultRepoSize
	}
	if len(o.Modes) == 0 {
		o.Modes = []string{ModeBaseline, ModeOff, ModeCold, ModeWarm}
	}
	switch {
	case o.Nodes < 1 || o.Nodes > 9:
		return fmt.Errorf("clones: %d nodes; want 1 to 9", o.Nodes)
	case o.Clones < 1 || o.Clones > 512:
		return fmt.Errorf("clones: %d concurrent clones; want 1 to 512", o.Clones)
	case o.Depth < 0:
		return fmt.Errorf("clones: depth %d is negative", o.Depth)
	case o.Protocol != "0" && o.Protocol != "1" && o.Protocol != "2":
		return fmt.Errorf("clones: protocol %q; want 0, 1 or 2", o.Protocol)
	case o.Repo.Files < 1 || o.Repo.Commits < 1 || o.Repo.Changed < 0 || o.Repo.Files > 1_000_000 || o.Repo.Commits > 100_000:
		return fmt.Errorf("clones: repository of %d files and %d commits (changing %d): out of range", o.Repo.Files, o.Repo.Commits, o.Repo.Changed)
	}
	seen := map[string]bool{}
	for _, m := range o.Modes {
		if !slices.Contains([]string{ModeBaseline, ModeOff, ModeCold, ModeWarm}, m) {
			return fmt.Errorf("clones: unknown mode %q; want baseline, off, cold or warm", m)
		}
		if seen[m] {
			return fmt.Errorf("clones: mode %q given twice", m)
		}
		seen[m] = true
	}
	if seen[ModeWarm] && !seen[ModeCold] {
		return errors.New("clones: warm needs cold (the cold storm fills the cache)")
	}
	if o.RepoDir == "" {
		r := o.Repo
		o.RepoDir = filepath.Join(os.TempDir(), fmt.Sprintf("shoal-clones-repo-%d-%d-%d", r.Files, r.Commits, r.Changed), "repo.git")
	}
	if _, err := exec.LookPath("git"); err != nil {
		return fmt.Errorf("clones: git is not installed: %w", err)
	}
	return nil
}

func (o *ClonesOptions) progress(format string, args ...any) {
	if o.Progress != nil {
		o.Progress(fmt.Sprintf(format, args...))
	}
}

// ClonesResult is a run: the repository and one row per mode.
type ClonesResult struct {
	Nodes     int         `json:"nodes"`
	Spread    bool        `json:"spread"`
	Clones    int         `json:"clones"`
	Depth     int         `json:"depth"`
	Protocol  string      `json:"protocol"`
	Repo      RepoSize    `json:"repo"`
	PackBytes int64       `json:"repo_pack_bytes"`
	Rows      []ClonesRow `json:"rows"`
}

// ClonesRow is one storm.
type ClonesRow struct {
	Mode   string `json:"mode"`
	Clones int    `json:"clones"`
	Failed int    `json:"failed"`
	// Wall is the storm, first start to last finish; P50, P99 and Max are
	// per clone.
	Wall time.Duration `json:"wall_ns"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	Max  time.Duration `json:"max_ns"`
	// ServerCPU is the CPU seconds of the server processes and the git
	// processes they ran during the storm. IdleCPU is what the servers
	// burn with no clone for as long (a node's gossip, raft heartbeats
	// and timers; measured for 3 s before the storm): ServerCPU - IdleCPU
	// is the storm's own cost.
	ServerCPU float64 `json:"server_cpu_s"`
	IdleCPU   float64 `json:"idle_cpu_s"`
	// ClientCPU is the CPU seconds of the git clients (clone, index-pack),
	// which share the machine's cores with the servers.
	ClientCPU float64 `json:"client_cpu_s"`
	// PeakPSS is the highest proportional set size (shared pages split
	// between their users, so a pack mapped by many git processes counts
	// once) of the server processes with their git children, sampled
	// every 50 ms.
	PeakPSS uint64 `json:"peak_pss_bytes"`
	// BytesServed is the pack bytes the clients received (the sizes of
	// their packs).
	BytesServed int64 `json:"bytes_served"`
	// Pack cache lookups during the storm (shoal modes).
	Hits, Misses, Joined, Bypasses, GitStarted uint64
}

// NetCPU is the storm's own server CPU: ServerCPU less IdleCPU.
func (r ClonesRow) NetCPU() float64 { return max(0, r.ServerCPU-r.IdleCPU) }

// CPUPerClone is NetCPU per successful clone.
func (r ClonesRow) CPUPerClone() float64 {
	return r.NetCPU() / float64(max(1, r.Clones-r.Failed))
}

// HitRatio is hits over the cacheable lookups (fetches and v2 ls-refs,
// two per v2 clone): requests that joined a file being written count as
// misses; requests the cache passes by (the first round of a shallow v0
// fetch) are left out.
func (r ClonesRow) HitRatio() float64 {
	all := r.Hits + r.Misses + r.Joined
	if all == 0 {
		return 0
	}
	return float64(r.Hits) / float64(all)
}

// Row returns the row of a mode.
func (r *ClonesResult) Row(mode string) (ClonesRow, bool) {
	for _, row := range r.Rows {
		if row.Mode == mode {
			return row, true
		}
	}
	return ClonesRow{}, false
}

// benchProject and benchSlug name the repository the storm clones.
const (
	benchProject = "BENCH"
	benchSlug    = "big"
)

// Clones runs the storms.
func Clones(ctx context.Context, o ClonesOptions) (*ClonesResult, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	o.progress("generating the repository (%d files, %d commits) in %s ...", o.Repo.Files, o.Repo.Commits, o.RepoDir)
	if err := GenerateRepo(ctx, o.RepoDir, o.Repo); err != nil {
		return nil, err
	}
	res := &ClonesResult{Nodes: o.Nodes, Spread: o.Spread, Clones: o.Clones, Depth: o.Depth, Protocol: o.Protocol, Repo: o.Repo}
	res.PackBytes = packBytes(o.RepoDir)
	head, err := gitOut(ctx, o.RepoDir, "rev-parse", "HEAD")
	if err != nil {
		return nil, err
	}
	o.progress("repository: %s of packs, HEAD %s", mib(res.PackBytes), head[:12])
	var shoalCluster *storm // the cache-on cluster, kept from cold to warm
	defer func() {
		if shoalCluster != nil {
			shoalCluster.stop()
		}
	}()
	for _, mode := range o.Modes {
		var s *storm
		switch mode {
		case ModeBaseline:
			s, err = startBaseline(ctx, &o, mode)
		case ModeOff:
			s, err = startShoal(ctx, &o, mode, "--pack-cache=false")
		case ModeCold:
			s, err = startShoal(ctx, &o, mode)
			shoalCluster = s
		case ModeWarm:
			s = shoalCluster
		}
		if err != nil {
			return res, fmt.Errorf("%s: %w", mode, err)
		}
		o.progress("%s: %d concurrent clones ...", mode, o.Clones)
		row, err := s.run(ctx, &o, mode, head)
		if s != shoalCluster {
			s.stop()
		}
		if err != nil {
			return res, fmt.Errorf("%s: %w", mode, err)
		}
		o.progress("%s: wall %v, p50 %v, server CPU %.2f s (%.2f s idle), client CPU %.1f s, peak PSS %s, hit ratio %.2f", mode,
			row.Wall.Round(time.Millisecond), row.P50.Round(time.Millisecond), row.ServerCPU, row.IdleCPU, row.ClientCPU,
			mib(int64(row.PeakPSS)), row.HitRatio())
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// storm is a server under test: its clone URLs and its processes.
type storm struct {
	urls    []string // one per node (or the baseline)
	pids    []int
	metrics []string // node HTTP addresses for /metrics; none for the baseline
	stop    func()
}

// startShoal starts a cluster with the repository in place.
func startShoal(ctx context.Context, o *ClonesOptions, mode string, args ...string) (*storm, error) {
	dir := filepath.Join(o.Dir, "shoal-"+mode)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := prepareDomain(ctx, filepath.Join(dir, "shoal.db")); err != nil {
		return nil, err
	}
	dst := filepath.Join(dir, "repos", benchProject, benchSlug+".git")
	if err := copyRepo(o.RepoDir, dst); err != nil {
		return nil, err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{
		Binary: o.Binary, N: o.Nodes, Dir: dir, Preset: "loopback", LogLevel: "warn",
		BootstrapExpect: o.Nodes, WatchParent: true, Args: append(slices.Clone(o.NodeArgs), args...),
	})
	if err != nil {
		return nil, err
	}
	s := &storm{stop: func() { c.Stop(15 * time.Second) }}
	if _, err := waitLeader(ctx, c); err != nil {
		s.stop()
		return nil, err
	}
	for _, p := range c.Nodes() {
		s.urls = append(s.urls, "http://"+p.HTTP+"/scm/"+benchProject+"/"+benchSlug+".git")
		s.pids = append(s.pids, p.PID)
		s.metrics = append(s.metrics, p.HTTP)
	}
	return s, nil
}

// prepareDomain creates the database with the public repository's rows.
func prepareDomain(ctx context.Context, path string) error {
	db, err := domain.Open(ctx, domain.Config{URL: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.CreateProject(ctx, domain.Project{Key: benchProject, Name: "Bench"}); err != nil {
		return err
	}
	_, err = db.CreateRepository(ctx, benchProject, domain.NewRepository{Name: benchSlug, Public: true})
	return err
}

// copyRepo copies the generated bare repository (packed, with bitmaps)
// to dst.
func copyRepo(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.CopyFS(dst, os.DirFS(src))
}

// startBaseline runs 'shoal bench clones --serve-baseline' (ServeBaseline)
// as its own process over a copy of the repository.
func startBaseline(ctx context.Context, o *ClonesOptions, mode string) (*storm, error) {
	dir := filepath.Join(o.Dir, "baseline")
	os.RemoveAll(dir)
	root := filepath.Join(dir, "repos")
	if err := copyRepo(o.RepoDir, filepath.Join(root, benchProject, benchSlug+".git")); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "addr")
	cmd := exec.Command(o.Binary, "bench", "clones", "--serve-baseline", root, "--baseline-addr", "127.0.0.1:0", "--baseline-ready", ready)
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s := &storm{pids: []int{cmd.Process.Pid}, stop: func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}}
	deadline := time.After(30 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			s.urls = []string{"http://" + strings.TrimSpace(string(b)) + "/scm/" + benchProject + "/" + benchSlug + ".git"}
			return s, nil
		}
		select {
		case <-done:
			return nil, fmt.Errorf("the baseline server exited; see %s", log.Name())
		case <-deadline:
			s.stop()
			return nil, errors.New("the baseline server did not start within 30 s")
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ServeBaseline serves the bare repositories under root with 'git
// http-backend' through net/http/cgi on addr (/scm/PROJECT/REPO.git/...),
// writes the address it listens on to readyFile, and serves until ctx
// ends. It is the baseline of the clone storm: one git process per
// request, no cache, no pools.
func ServeBaseline(ctx context.Context, root, addr, readyFile string) error {
	git, err := exec.LookPath("git")
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	h := &cgi.Handler{Path: git, Args: []string{"http-backend"}, Root: "/scm",
		Env: []string{"GIT_PROJECT_ROOT=" + abs, "GIT_HTTP_EXPORT_ALL=1"}}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if readyFile != "" {
		if err := os.WriteFile(readyFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			ln.Close()
			return err
		}
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// run runs one storm: every clone starts at once; the servers' CPU is
// read before and after, their memory sampled meanwhile.
func (s *storm) run(ctx context.Context, o *ClonesOptions, mode, head string) (ClonesRow, error) {
	row := ClonesRow{Mode: mode, Clones: o.Clones}
	dir := filepath.Join(o.Dir, "clones-"+mode)
	os.RemoveAll(dir)
	defer os.RemoveAll(dir)
	home := filepath.Join(o.Dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return row, err
	}
	before, err := s.packLookups(ctx)
	if err != nil {
		return row, err
	}
	idleRate, err := s.idleRate(ctx, 3*time.Second)
	if err != nil {
		return row, err
	}
	cpu0, err := s.cpu()
	if err != nil {
		return row, err
	}
	stopSampling, peak := s.samplePSS()
	times, clientCPU := make([]time.Duration, o.Clones), make([]float64, o.Clones)
	errs := make([]error, o.Clones)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range o.Clones {
		url := s.urls[0]
		if o.Spread {
			url = s.urls[i%len(s.urls)]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			times[i], clientCPU[i], errs[i] = cloneOnce(ctx, o, home, url, filepath.Join(dir, strconv.Itoa(i)))
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	row.Wall = time.Since(start)
	stopSampling()
	cpu1, err := s.cpu()
	if err != nil {
		return row, err
	}
	row.ServerCPU, row.IdleCPU = cpu1-cpu0, idleRate*row.Wall.Seconds()
	row.PeakPSS = *peak
	for _, c := range clientCPU {
		row.ClientCPU += c
	}
	var firstErr error
	var ok []time.Duration
	for i, err := range errs {
		if err == nil {
			err = checkClone(ctx, filepath.Join(dir, strconv.Itoa(i)), head)
		}
		if err != nil {
			row.Failed++
			firstErr = cmpOr(firstErr, err)
			continue
		}
		ok = append(ok, times[i])
		row.BytesServed += packBytes(filepath.Join(dir, strconv.Itoa(i)))
	}
	if firstErr != nil {
		return row, fmt.Errorf("%d of %d clones failed; first: %w", row.Failed, o.Clones, firstErr)
	}
	slices.Sort(ok)
	row.P50, row.P99, row.Max = quantile(ok, 0.5), quantile(ok, 0.99), ok[len(ok)-1]
	after, err := s.packLookups(ctx)
	if err != nil {
		return row, err
	}
	row.Hits, row.Misses, row.Joined = after.hit-before.hit, after.miss-before.miss, after.joined-before.joined
	row.Bypasses, row.GitStarted = after.bypass-before.bypass, after.git-before.git
	return row, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// quantile is the nearest-rank q-quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

// cloneOnce runs one bare clone (no checkout: the client's work that is
// not the server's stays out of the way), times it and returns its CPU
// seconds (git clone and the children it waited for: index-pack).
func cloneOnce(ctx context.Context, o *ClonesOptions, home, url, dst string) (time.Duration, float64, error) {
	args := []string{"-c", "protocol.version=" + o.Protocol, "clone", "-q", "--bare"}
	if o.Depth > 0 {
		args = append(args, "--depth", strconv.Itoa(o.Depth))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append(args, url, dst)...)
	cmd.Env = gitClientEnv(home)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	var cpu float64
	if ps := cmd.ProcessState; ps != nil {
		cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if err != nil {
		return d, cpu, fmt.Errorf("git clone %s: %w: %s", url, err, strings.TrimSpace(string(out)))
	}
	return d, cpu, nil
}

// checkClone checks the clone's HEAD.
func checkClone(ctx context.Context, dir, head string) error {
	got, err := gitOut(ctx, dir, "rev-parse", "HEAD")
	if err != nil {
		return err
	}
	if got != head {
		return fmt.Errorf("clone %s has HEAD %s, want %s", dir, got, head)
	}
	return nil
}

// gitClientEnv is an environment in which git reads none of the
// machine's configuration and never prompts.
func gitClientEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+home, "XDG_CONFIG_HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
}

func (s *storm) cpu() (float64, error) {
	var sum float64
	for _, pid := range s.pids {
		c, err := readProcCPU(pid)
		if err != nil {
			return 0, fmt.Errorf("server CPU: %w", err)
		}
		sum += c.total()
	}
	return sum, nil
}

// idleRate is the servers' CPU seconds per second with nothing to do.
func (s *storm) idleRate(ctx context.Context, d time.Duration) (float64, error) {
	c0, err := s.cpu()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	c1, err := s.cpu()
	return (c1 - c0) / time.Since(start).Seconds(), err
}

// samplePSS samples the servers' tree PSS every 50 ms until stop.
func (s *storm) samplePSS() (stop func(), peak *uint64) {
	peak = new(uint64)
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			*peak = max(*peak, treePSS(s.pids))
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }, peak
}

// lookups are the pack cache counters summed over the nodes.
type lookups struct{ hit, miss, joined, bypass, git uint64 }

func (s *storm) packLookups(ctx context.Context) (lookups, error) {
	var l lookups
	for _, addr := range s.metrics {
		m, err := scrapeMetrics(ctx, addr)
		if err != nil {
			return l, err
		}
		l.hit += m[`shoal_pack_lookups_total{result="hit"}`]
		l.miss += m[`shoal_pack_lookups_total{result="miss"}`]
		l.joined += m[`shoal_pack_lookups_total{result="joined"}`]
		l.bypass += m[`shoal_pack_lookups_total{result="bypass"}`]
		l.git += m["shoal_pack_git_started_total"]
	}
	return l, nil
}

// scrapeMetrics reads a node's /metrics counters, without the node label.
func scrapeMetrics(ctx context.Context, addr string) (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", addr, resp.Status)
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		if i := strings.Index(name, `{node="`); i >= 0 {
			rest := name[i+len(`{node="`):]
			j := strings.IndexByte(rest, '"')
			if labels := strings.TrimPrefix(rest[j+1:], ","); labels == "}" {
				name = name[:i]
			} else {
				name = name[:i] + "{" + labels
			}
		}
		m[name] = uint64(v)
	}
	return m, sc.Err()
}

// packBytes is the size of a repository's pack files.
func packBytes(gitDir string) int64 {
	var n int64
	packs, _ := filepath.Glob(filepath.Join(gitDir, "objects", "pack", "*.pack"))
	for _, p := range packs {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func gitOut(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = gitClientEnv(os.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// GenerateRepo makes a bare repository of the given size at dir with git
// fast-import, from a fixed seed, repacked with bitmaps as a serving
// repository would be; main has every commit and tag v1 points half way.
// A repository already complete at dir is kept.
func GenerateRepo(ctx context.Context, dir string, size RepoSize) error {
	done := filepath.Join(dir, "shoal-generated")
	if _, err := os.Stat(done); err == nil {
		return nil
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if _, err := gitOut(ctx, "", "init", "-q", "--bare", "-b", "main", dir); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "git", "-C", dir, "fast-import", "--quiet")
	cmd.Env = gitClientEnv(os.TempDir())
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	w := bufio.NewWriterSize(in, 1<<20)
	werr := writeHistory(w, size)
	if werr == nil {
		werr = w.Flush()
	}
	in.Close()
	if err := cmd.Wait(); err != nil || werr != nil {
		return fmt.Errorf("git fast-import: %v %v: %s", err, werr, stderr.String())
	}
	if _, err := gitOut(ctx, dir, "repack", "-a", "-d", "-b", "-q"); err != nil {
		return err
	}
	return os.WriteFile(done, nil, 0o644)
}

// writeHistory writes the fast-import stream: every file in the first
// commit, then Changed files rewritten in part by each commit.
func writeHistory(w io.Writer, size RepoSize) error {
	rng := rand.New(rand.NewPCG(42, 42))
	files := make([][]string, size.Files)
	for i := range files {
		files[i] = make([]string, 120)
		for j := range files[i] {
			files[i][j] = randomLine(rng)
		}
	}
	for c := range size.Commits {
		if _, err := fmt.Fprintf(w, "commit refs/heads/main\ncommitter T <t@example.com> %d +0000\ndata <<EOM\ncommit %d\nEOM\n", 1700000000+c*3600, c); err != nil {
			return err
		}
		changed := make([]int, 0, size.Changed)
		if c == 0 {
			for i := range files {
				changed = append(changed, i)
			}
		} else {
			for range size.Changed {
				changed = append(changed, rng.IntN(size.Files))
			}
		}
		for _, i := range changed {
			if c > 0 {
				for range 10 {
					files[i][rng.IntN(len(files[i]))] = randomLine(rng)
				}
			}
			data := strings.Join(files[i], "")
			if _, err := fmt.Fprintf(w, "M 644 inline dir%02d/file%04d.txt\ndata %d\n%s\n", i%60, i, len(data), data); err != nil {
				return err
			}
		}
		if c == size.Commits/2 {
			fmt.Fprintf(w, "reset refs/tags/v1\nfrom refs/heads/main\n\n")
		}
	}
	return nil
}

// randomLine is a line of source-like text: words and a hex identifier.
func randomLine(rng *rand.Rand) string {
	words := []string{"func", "return", "if", "err", "nil", "value", "config", "cache", "entry", "index", "for", "range", "the", "node", "state"}
	var b strings.Builder
	for range 3 + rng.IntN(6) {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "%016x%016x\n", rng.Uint64(), rng.Uint64())
	return b.String()
}

// WriteJSON writes the result as indented JSON.
func (r *ClonesResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
