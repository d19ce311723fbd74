package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 20*time.Second) }

const tinyExperiment = `
name: tiny
modes: [local, distributed, near]
sizes: [1, 2]
stages:
  clients: [3]
  duration: 1500ms
  warmup: 500ms
mix: {view_pr: 4, list_prs: 2, browse_repos: 2, list_comments: 2, add_comment: 2, update_pr: 2, create_repo: 1}
data: {users: 3, projects: 2, repos_per_project: 2, prs_per_repo: 3, comments_per_pr: 1}
zipf: 1.2
seed: 7
lag_probe: 50ms
quiet: {max_other_cpu: 0.0001, retries: 1}
`

// A tiny experiment, nodes and load generator in process: every section
// of the results and the report is filled.
func TestCouplingTinyExperiment(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	exp, err := ParseExperiment([]byte(tinyExperiment))
	if err != nil {
		t.Fatal(err)
	}
	// Six clusters start and stop one after another: about a minute on a
	// quiet machine, several on a loaded one.
	ctx, cancel := testContext(t, 12*time.Minute)
	defer cancel()
	var prog, warn bytes.Buffer
	start := time.Now()
	profiles := t.TempDir()
	res, err := Coupling(ctx, CouplingOptions{Experiment: exp, ExperimentFile: tinyExperiment, InProcess: true,
		LoadgenInProcess: true, Dir: t.TempDir(), Logger: testkit.Logger(t), Progress: &prog, Warnings: &warn, ProfileDir: profiles,
		WarmupArm: true})
	if err != nil {
		t.Fatalf("after %v: %v\nprogress:\n%s", time.Since(start).Round(time.Second), err, prog.String())
	}
	t.Logf("6 arms in %v", time.Since(start).Round(time.Second))
	if len(res.Runs) != 1 || len(res.Runs[0]) != 6 {
		t.Fatalf("runs: %d, arms: %d; want 1 run of 6 arms", len(res.Runs), len(res.Runs[0]))
	}
	checkProgressLines(t, prog.String())
	// The warm-up arm ran first, and is in neither the results nor the
	// profiles.
	if !res.Manifest.WarmupArm || !strings.Contains(strings.SplitN(prog.String(), "\n", 2)[0], "warm-up arm local×1 (discarded)") {
		t.Errorf("manifest warmup_arm %v; progress:\n%s", res.Manifest.WarmupArm, prog.String())
	}
	if warm, _ := filepath.Glob(filepath.Join(profiles, "r0*")); len(warm) > 0 {
		t.Errorf("the warm-up arm left profiles: %v", warm)
	}
	// One warning per attempt other processes disturbed beyond the guard.
	disturbed := 0
	for _, ar := range res.Runs[0] {
		for _, st := range ar.Stages {
			for _, share := range st.OthersShareAttempts {
				if share > exp.Quiet.MaxOtherCPU {
					disturbed++
				}
			}
		}
	}
	if got := strings.Count(warn.String(), "warning: "); got != disturbed {
		t.Errorf("%d warnings for %d disturbed attempts:\n%s", got, disturbed, warn.String())
	}
	checkManifest(t, res.Manifest)
	for _, ar := range res.Runs[0] {
		checkArm(t, ar)
		checkProfiles(t, profiles, ar)
	}
	out := t.TempDir()
	if err := WriteReport(out, res); err != nil {
		t.Fatal(err)
	}
	checkReport(t, out, res)
}

// testContext is a context that ends after d, or a minute before the
// test binary's -timeout, whichever comes first: a test that runs out of
// time fails with its own error rather than the binary's panic.
func testContext(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := t.Deadline(); ok {
		d = min(d, time.Until(dl)-time.Minute)
	}
	return context.WithTimeout(context.Background(), d)
}

func checkManifest(t *testing.T, m Manifest) {
	t.Helper()
	if m.Commit == "" || m.GoVersion == "" || m.GOMAXPROCS < 1 || m.CPUModel == "" || m.Nodes != "in-process" ||
		m.Loadgen != "in-process" || m.ExperimentFile == "" || m.Data.PullRequests != 12 || m.Interrupted {
		t.Errorf("manifest not filled: %+v", m)
	}
}

// checkProfiles checks that every attempt at the arm's stages left a CPU
// profile (gzipped protobuf) of the arm's first node: in process, the
// nodes share one profiler.
func checkProfiles(t *testing.T, dir string, ar ArmResult) {
	t.Helper()
	for si, st := range ar.Stages {
		for a := range st.OthersShareAttempts {
			name := fmt.Sprintf("r%d%s%ds%da%d-%s.pprof", ar.Repeat, ar.Arm.Mode[:1], ar.Arm.Nodes, si, a, ar.Nodes[0].Name)
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
				t.Errorf("%s: CPU profile %s: %d bytes, %v", ar.Arm.Name(), name, len(b), err)
			}
			var hits [2]uint64
			for i := range hits {
				var st struct {
					Cache l2cache.Stats `json:"cache"`
				}
				sname := strings.TrimSuffix(name, ".pprof") + fmt.Sprintf(".stats%d.json", i)
				if b, err := os.ReadFile(filepath.Join(dir, sname)); err != nil || json.Unmarshal(b, &st) != nil {
					t.Errorf("%s: stats %s: %v", ar.Arm.Name(), sname, err)
				}
				hits[i] = st.Cache.Node.NearHits
				for _, r := range st.Cache.Regions {
					hits[i] += r.Hits
				}
			}
			if hits[1] <= hits[0] {
				t.Errorf("%s: %s: the node's cache hits went from %d to %d over the profiled window", ar.Arm.Name(), name, hits[0], hits[1])
			}
		}
	}
}

func checkArm(t *testing.T, ar ArmResult) {
	t.Helper()
	name := ar.Arm.Name()
	if len(ar.Nodes) != ar.Arm.Nodes || len(ar.Stages) != 1 || ar.Error != "" {
		t.Fatalf("%s: %d nodes placed, %d stages, error %q", name, len(ar.Nodes), len(ar.Stages), ar.Error)
	}
	for _, n := range ar.Nodes {
		if n.HTTP == "" || n.RPC == "" || n.PID == 0 || ar.PeakRSS[n.Name] == 0 {
			t.Errorf("%s: node %+v, peak RSS %d", name, n, ar.PeakRSS[n.Name])
		}
	}
	st := ar.Stages[0]
	if st.Clients != 3 || st.Seconds < 1 || st.Total.Count == 0 || st.Total.OpsPerSec <= 0 || st.Total.P99Ms <= 0 ||
		st.Total.MaxMs < st.Total.P50Ms || st.Total.MeanMs <= 0 || st.Total.Hist == "" {
		t.Errorf("%s: total %+v", name, st.Total)
	}
	if n := len(st.OthersShareAttempts); n < 1 || n > 2 {
		t.Errorf("%s: %d attempts at the stage, want 1 or 2 (quiet.retries 1)", name, n)
	}
	if st.Total.Errors > 0 {
		t.Errorf("%s: %d errors: %v", name, st.Total.Errors, st.Errors)
	}
	if len(st.Ops) != len(Ops) {
		t.Errorf("%s: %d operations reported, want %d", name, len(st.Ops), len(Ops))
	}
	// Every operation runs, unless the stage ran so few that missing one
	// is likely (a loaded machine, -race): its expected count under 10.
	exp, _ := ParseExperiment([]byte(tinyExperiment))
	weights := 0
	for _, w := range exp.Mix {
		weights += w
	}
	for _, o := range st.Ops {
		expected := float64(st.Total.Count) * float64(exp.Mix[o.Op]) / float64(weights)
		if o.Count == 0 && o.Op != OpCreateRepo && expected >= 10 {
			t.Errorf("%s: %s never ran in %d operations", name, o.Op, st.Total.Count)
		}
	}
	if st.Cache.Hits == 0 || st.Cache.HitRatio <= 0 || st.Cache.HitRatio > 1 {
		t.Errorf("%s: cache %+v", name, st.Cache)
	}
	if (ar.Arm.Mode == "near") != (st.Cache.NearHits > 0) || st.Cache.NearHits > st.Cache.Hits {
		t.Errorf("%s: %d near hits of %d hits", name, st.Cache.NearHits, st.Cache.Hits)
	}
	if st.CPU.NodesSeconds <= 0 || st.CPU.LoadgenSeconds <= 0 || st.CPU.LoadgenShare <= 0 || !st.CPU.SharedProcess {
		t.Errorf("%s: cpu %+v", name, st.CPU)
	}
	if st.Lag.Samples == 0 || st.Lag.P99Ms <= 0 {
		t.Errorf("%s: invalidation lag %+v", name, st.Lag)
	}
	if ar.Arm.Nodes > 1 {
		if st.Traffic.Messages == 0 || st.Traffic.MessagesPerOp <= 0 || st.Traffic.SocketBytes == 0 {
			t.Errorf("%s: traffic %+v", name, st.Traffic)
		}
		if ar.Arm.Mode != "local" && (st.Cache.RemoteCalls == 0 || st.Traffic.L2Bytes == 0) {
			t.Errorf("%s: no remote cache calls: %+v %+v", name, st.Cache, st.Traffic)
		}
		// The writes' cache work, and in the owned modes the owners' waits
		// for the backups (backups: 1).
		if st.Cache.Writes["change"].Count == 0 || st.Cache.Writes["change"].P99Ms <= 0 {
			t.Errorf("%s: writes %+v", name, st.Cache.Writes)
		}
		if ar.Arm.Mode != "local" && st.Cache.OwnerWaits["backups"].Count == 0 {
			t.Errorf("%s: owner waits %+v", name, st.Cache.OwnerWaits)
		}
	}
}

func checkReport(t *testing.T, dir string, res *CouplingResults) {
	t.Helper()
	for _, f := range []string{"results.json", "report.md", "throughput.png", "throughput.svg", "p99.png", "p99.svg",
		"bytes-per-op.png", "bytes-per-op.svg", "cpu-per-op.png", "cpu-per-op.svg"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	for _, want := range []string{"local×1", "distributed×2", "## Summary", "## Per operation", "## Peak RSS", "## Spread", "throughput.png",
		"loadgen CPU", "name: tiny", "## Faster mode", "near×2", "## NEAR against LOCAL and DISTRIBUTED", "## Writes: the cache's part"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	back, err := ReadResults(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cmp strings.Builder
	if err := Compare(&cmp, res, back); err != nil {
		t.Fatal(err)
	}
	if strings.Count(cmp.String(), "1.00") < 4 {
		t.Errorf("a result compared with itself:\n%s", cmp.String())
	}
	if w := Winners(back); len(w) != 2 {
		t.Errorf("winners: %q, want one per size", w)
	}
}

// Ctrl-C during the run: the stages done so far come back, marked.
func TestCouplingInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	exp, err := ParseExperiment([]byte(strings.Replace(tinyExperiment, "clients: [3]", "clients: [2, 2, 2, 2, 2, 2]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	exp.Sizes, exp.Modes, exp.Quiet = []int{1}, []string{"local"}, Quiet{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stages := 0
	res, err := Coupling(ctx, CouplingOptions{Experiment: exp, InProcess: true, LoadgenInProcess: true, Dir: t.TempDir(), Logger: testkit.Logger(t),
		afterStage: func() {
			if stages++; stages == 2 {
				cancel() // Ctrl-C during the third stage
			}
		}})
	if err == nil {
		t.Fatal("no error from an interrupted run")
	}
	if !res.Manifest.Interrupted || len(res.Runs) != 1 || len(res.Runs[0][0].Stages) != 2 || len(res.Runs[0][0].PeakRSS) != 1 {
		t.Fatalf("interrupted run: %+v, %d runs", res.Manifest, len(res.Runs))
	}
	if err := WriteReport(t.TempDir(), res); err != nil {
		t.Fatal(err)
	}
}

// The switch stage on an in-process cluster: the load runs through every
// switch, each switch answers, the timeline covers the window, nothing
// fails, and the report holds the switch table, timeline and charts.
func TestCouplingSwitchStage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	// A switch takes about 0.2 s on a quiet machine and has taken 2 s
	// under the whole race-enabled suite on 2 cores: every window leaves
	// room for that, and the checks below accept a window the switch ran
	// through, as the report must.
	const every = 3.0
	src := strings.Replace(tinyExperiment, "modes: [local, distributed, near]\nsizes: [1, 2]", "modes: [local]\nsizes: [1]", 1) +
		"switch: {nodes: 2, clients: 3, modes: [local, near, distributed], every: 3s, bucket: 250ms, warmup: 300ms}\n"
	exp, err := ParseExperiment([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	exp.Quiet = Quiet{}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var prog bytes.Buffer
	res, err := Coupling(ctx, CouplingOptions{Experiment: exp, ExperimentFile: src, InProcess: true, LoadgenInProcess: true,
		Dir: t.TempDir(), Logger: testkit.Logger(t), Progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Switch) != 1 {
		t.Fatalf("%d switch runs, want 1", len(res.Switch))
	}
	sr := res.Switch[0]
	if len(sr.Nodes) != 2 || sr.Error != "" || len(sr.PeakRSS) != 2 {
		t.Fatalf("switch run: %d nodes, error %q, peak RSS %v", len(sr.Nodes), sr.Error, sr.PeakRSS)
	}
	if len(sr.Switches) != 2 {
		t.Fatalf("switches: %+v, want local→near and near→distributed", sr.Switches)
	}
	for i, ev := range sr.Switches {
		want := [][2]string{{"local", "near"}, {"near", "distributed"}}[i]
		if !ev.OK() || ev.From != want[0] || ev.To != want[1] || ev.Seconds <= 0 || ev.At < every*float64(i+1)-0.01 || ev.Epoch == 0 {
			t.Errorf("switch %d: %+v", i, ev)
		}
	}
	if sr.Switches[1].Epoch <= sr.Switches[0].Epoch || sr.Switches[1].Via == sr.Switches[0].Via {
		t.Errorf("switches: %+v (want rising epochs, through both nodes)", sr.Switches)
	}
	if !strings.HasPrefix(sr.FinalMode, "distributed (stable") {
		t.Errorf("final mode %q", sr.FinalMode)
	}
	st := sr.Stage
	if st.Total.Count == 0 || st.Total.Errors != 0 || st.Seconds < 3*every {
		t.Errorf("switch stage: %d ops, %d failed (%v), %.1fs", st.Total.Count, st.Total.Errors, st.Errors, st.Seconds)
	}
	if len(sr.Stage.Timeline) < 36 {
		t.Errorf("%d buckets, want 36 of 250ms over 9s", len(sr.Stage.Timeline))
	}
	var ops int64
	for _, b := range sr.Stage.Timeline {
		ops += b.Ops
	}
	if ops != st.Total.Count {
		t.Errorf("timeline: %d ops, total %d", ops, st.Total.Count)
	}
	if len(sr.Windows) != 3 {
		t.Fatalf("windows: %+v, want one per mode", sr.Windows)
	}
	counted := 0
	for i, w := range sr.Windows {
		if w.Mode != []string{"local", "near", "distributed"}[i] || !w.Switched || w.To != every*float64(i+1) {
			t.Errorf("window %d: %+v", i, w)
		}
		// A window counts the whole buckets after its switch answered:
		// some when one fits, none when the switch ran past the last.
		answered := 0.0
		if i > 0 {
			answered = sr.Switches[i-1].At + sr.Switches[i-1].Seconds
		}
		if fits := answered+0.25 <= w.To-0.25; (fits && w.Ops == 0) || (w.Seconds > 0 && w.From < answered) {
			t.Errorf("window %d: %+v (switch answered at %.2fs)", i, w, answered)
		}
		if w.Seconds > 0 {
			counted++
		} else {
			t.Logf("window %d: the switch ran through it (answered at %.2fs): %+v", i, answered, w)
		}
	}
	if !strings.Contains(prog.String(), "switch local→near→distributed×2") {
		t.Errorf("progress does not name the switch stage:\n%s", prog.String())
	}
	out := t.TempDir()
	if err := WriteReport(out, res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"switch-throughput.png", "switch-p99.svg"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	wants := []string{"## Mode switch under load", "| local → near | node", "| near → distributed |", "local→near",
		"0 failed", "switch-throughput.png", "Final mode: distributed (stable", "Steady windows", "| 2 | near |"}
	switch w := sr.Windows; {
	case w[1].Seconds > 0 && w[2].Seconds > 0:
		wants = append(wants, "near/distributed, each near window against its neighbouring distributed windows")
	case counted < 2:
		wants = append(wants, "No paired ratio")
	}
	for _, want := range wants {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	back, err := ReadResults(out)
	if err != nil || len(back.Switch) != 1 || len(back.Switch[0].Stage.Timeline) != len(sr.Stage.Timeline) {
		t.Errorf("results.json read back: %v", err)
	}
}
