package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Each mistake in an experiment file is an error naming the field.
func TestParseExperimentErrors(t *testing.T) {
	for _, tc := range []struct{ change, old, want string }{
		{"modes: [local, nearish]", "modes: [local, distributed, near]", "modes[1]"},
		{"modes: []", "modes: [local, distributed, near]", "modes: at least one"},
		{"sizes: [1, 0]", "sizes: [1, 2]", "sizes[1]"},
		{"clients: [3, -1]", "clients: [3]", "stages.clients[1]"},
		{"duration: 10", "duration: 1500ms", "duration"},
		{"duration: 1ms", "duration: 1500ms", "stages.duration"},
		{"view_pr: -4", "view_pr: 4", "mix.view_pr"},
		{"view_prs: 4", "view_pr: 4", "mix.view_prs"},
		{"projects: 0", "projects: 2", "data.projects"},
		{"zipf: 1.0", "zipf: 1.2", "zipf"},
		{"seeds: 7", "seed: 7", "seeds"},
		{"lag_probe: soon", "lag_probe: 50ms", "duration"},
		{"invalidation: eventually\nlag_probe: 50ms", "lag_probe: 50ms", "invalidation"},
		{"backups: 3\nlag_probe: 50ms", "lag_probe: 50ms", "backups"},
		{"max_other_cpu: 2,", "max_other_cpu: 0.0001,", "quiet.max_other_cpu"},
		{"retries: -1}", "retries: 1}", "quiet.retries"},
	} {
		src := strings.Replace(tinyExperiment, tc.old, tc.change, 1)
		if src == tinyExperiment {
			t.Fatalf("%q not found in the tiny experiment", tc.old)
		}
		_, err := ParseExperiment([]byte(src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %q", tc.change, err, tc.want)
		}
	}
	sw := tinyExperiment + "switch: {nodes: 3, clients: 4, modes: [local, distributed, near, local], every: 2s, bucket: 250ms}\n"
	e, err := ParseExperiment([]byte(sw))
	if err != nil {
		t.Fatal(err)
	}
	if e.Switch.Window() != 8*time.Second || e.Switch.Warmup.D() != 500*time.Millisecond {
		t.Errorf("switch window %v, warm-up %v (want stages.warmup)", e.Switch.Window(), e.Switch.Warmup.D())
	}
	if e.Switch.Settle.D() != 500*time.Millisecond {
		t.Errorf("switch settle %v, want a quarter of every (500ms)", e.Switch.Settle.D())
	}
	for _, tc := range []struct{ old, change, want string }{
		{"nodes: 3", "nodes: 0", "switch.nodes"},
		{"clients: 4", "clients: 2000", "switch.clients"},
		{"[local, distributed, near, local]", "[near]", "switch.modes: want at least two"},
		{"[local, distributed, near, local]", "[local, nearby]", "switch.modes[1]"},
		{"[local, distributed, near, local]", "[local, near, near]", "switch.modes[2]"},
		{"every: 2s", "every: 10ms", "switch.every"},
		{"bucket: 250ms", "bucket: 1ms", "switch.bucket"},
		{"bucket: 250ms", "bucket: 3s", "longer than switch.every"},
		{"every: 2s, bucket: 250ms", "every: 100000s, bucket: 50ms", "buckets"},
		{"bucket: 250ms", "bucket: 250ms, warmup: -1s", "switch.warmup"},
		{"bucket: 250ms", "bucket: 250ms, settle: 2s", "switch.settle"},
		{"bucket: 250ms", "bucket: 250ms, settle: -1s", "switch.settle"},
		{"bucket: 250ms", "bucket: 250ms, pause: 1s", "pause"},
	} {
		src := strings.Replace(sw, tc.old, tc.change, 1)
		if src == sw {
			t.Fatalf("%q not found in the switch stage", tc.old)
		}
		if _, err := ParseExperiment([]byte(src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %q", tc.change, err, tc.want)
		}
	}
	if _, err := ParseExperiment(nil); err == nil {
		t.Error("an empty file is accepted")
	}
}

// Every checked-in experiment parses, and the quick profile runs every
// mode (local, distributed, near) at 1 and 3 nodes.
func TestCheckedInExperiments(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("experiments", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, path := range paths {
		names = append(names, filepath.Base(path))
	}
	for _, want := range []string{"default.yaml", "quick.yaml", "near36.yaml", "promise-async.yaml", "promise-sync.yaml"} {
		if !slices.Contains(names, want) {
			t.Errorf("experiments/%s is missing (found %v)", want, names)
		}
	}
	for _, name := range names {
		e, _, err := LoadExperiment(filepath.Join("experiments", name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.HasPrefix(name, "promise-") && (e.Invalidation != strings.TrimSuffix(strings.TrimPrefix(name, "promise-"), ".yaml") || !slices.Equal(e.Modes, []string{"local", "near"})) {
			t.Errorf("%s: invalidation %q, modes %v", name, e.Invalidation, e.Modes)
		}
		if name == "quick.yaml" && (len(e.Arms()) != 6 || e.Switch == nil || e.Sizes[0] != 1 || e.Sizes[1] != 3) {
			t.Errorf("quick profile arms: %v", e.Arms())
		}
	}
	if _, _, err := LoadExperiment(filepath.Join(t.TempDir(), "missing.yaml")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestArmsOrder(t *testing.T) {
	e := Experiment{Modes: []string{"local", "distributed"}, Sizes: []int{1, 3}}
	var got []string
	for _, a := range e.Arms() {
		got = append(got, a.Name())
	}
	if strings.Join(got, " ") != "local×1 distributed×1 local×3 distributed×3" {
		t.Fatalf("arms: %v", got)
	}
}

func TestRepeatOrderAlternates(t *testing.T) {
	e := Experiment{Modes: []string{"local", "distributed", "near"}, Sizes: []int{3}}
	names := func(as []Arm) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.Name())
		}
		return out
	}
	arms := e.Arms()
	want := names(arms)
	if got := names(repeatOrder(arms, 1)); !slices.Equal(got, want) {
		t.Errorf("repeat 1 runs %v, want the experiment's order %v", got, want)
	}
	rev := slices.Clone(want)
	slices.Reverse(rev)
	if got := names(repeatOrder(arms, 2)); !slices.Equal(got, rev) {
		t.Errorf("repeat 2 runs %v, want %v", got, rev)
	}
	if got := names(arms); !slices.Equal(got, want) {
		t.Errorf("repeatOrder changed the experiment's arms to %v", got)
	}
	if got := names(repeatOrder(arms, 3)); !slices.Equal(got, want) {
		t.Errorf("repeat 3 runs %v, want %v", got, want)
	}
}
