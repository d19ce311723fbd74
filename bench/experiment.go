package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Experiment is a coupling experiment file (YAML; JSON is YAML too). The
// arms are every mode crossed with every size; each arm runs the stages,
// one per client count, in order, against a fresh cluster with the same
// data. bench/experiments/default.yaml documents every field.
type Experiment struct {
	// Name labels the report.
	Name string `yaml:"name" json:"name"`
	// Modes are the L2 cache coupling modes: local, distributed, near.
	Modes []string `yaml:"modes" json:"modes"`
	// Sizes are the cluster sizes (nodes).
	Sizes []int `yaml:"sizes" json:"sizes"`
	// Invalidation is every node's --invalidation: async (default) or sync.
	Invalidation string `yaml:"invalidation" json:"invalidation"`
	// Backups is every DISTRIBUTED node's --backups (default 1).
	Backups *int `yaml:"backups" json:"backups"`
	// Stages is the client concurrency ladder.
	Stages Stages `yaml:"stages" json:"stages"`
	// Mix weighs the operations; see Ops for the names.
	Mix map[string]int `yaml:"mix" json:"mix"`
	// Data sizes the seeded data set.
	Data DataSet `yaml:"data" json:"data"`
	// Zipf is the skew s (> 1) of the choice of repositories and pull
	// requests: larger means a hotter head.
	Zipf float64 `yaml:"zipf" json:"zipf"`
	// Seed fixes the data set and every client's choices.
	Seed int64 `yaml:"seed" json:"seed"`
	// LagProbe is the interval between invalidation lag probes (a write
	// through one node, then polling another until it reads the write);
	// 0 disables them.
	LagProbe Duration `yaml:"lag_probe" json:"lag_probe"`
	// Quiet guards against a shared machine: a stage during which other
	// processes (neither the nodes nor the load generator) used more than
	// MaxOtherCPU of the machine is run again, up to Retries times, and
	// the attempt they disturbed least is kept. Zero values: off.
	Quiet Quiet `yaml:"quiet" json:"quiet"`
	// Switch, if set, is a stage run after the arms: a cluster started in
	// Switch.Modes[0] is switched to each next mode in turn while the
	// load generator runs.
	Switch *SwitchStage `yaml:"switch" json:"switch,omitempty"`
}

// SwitchStage switches a running cluster's cache mode under load: the
// cluster starts in Modes[0]; after the warm-up the load generator runs
// for len(Modes)×Every, recording a timeline of Bucket-long buckets, and
// at every Every boundary the runner switches the cluster to the next
// mode (PUT /v1/cache/mode, through the nodes in turn).
type SwitchStage struct {
	Nodes   int      `yaml:"nodes" json:"nodes"`
	Clients int      `yaml:"clients" json:"clients"`
	Modes   []string `yaml:"modes" json:"modes"`
	Every   Duration `yaml:"every" json:"every"`
	Bucket  Duration `yaml:"bucket" json:"bucket"`
	// Warmup runs before the timeline, in Modes[0]; unset, stages.warmup.
	Warmup *Duration `yaml:"warmup" json:"warmup,omitempty"`
	// Settle is left out of each mode's window after its switch answered
	// (the caches refill) when the report reads the window's steady
	// throughput (SwitchWindows); unset, a quarter of Every.
	Settle *Duration `yaml:"settle" json:"settle,omitempty"`
}

// Window is the measured length of the switch stage: len(Modes)×Every.
func (s *SwitchStage) Window() time.Duration { return time.Duration(len(s.Modes)) * s.Every.D() }

// maxBuckets bounds a switch stage's timeline.
const maxBuckets = 10000

// Quiet is Experiment.Quiet.
type Quiet struct {
	// MaxOtherCPU is a share of the whole machine, 0 to 1.
	MaxOtherCPU float64 `yaml:"max_other_cpu" json:"max_other_cpu"`
	Retries     int     `yaml:"retries" json:"retries"`
}

// Stages is the client ladder and the time spent at each step.
type Stages struct {
	Clients []int `yaml:"clients" json:"clients"`
	// Duration is measured; Warmup runs before it and is discarded.
	Duration Duration `yaml:"duration" json:"duration"`
	Warmup   Duration `yaml:"warmup" json:"warmup"`
}

// DataSet is the seeded data (domain.SeedConfig's counts).
type DataSet struct {
	Users           int `yaml:"users" json:"users"`
	Projects        int `yaml:"projects" json:"projects"`
	ReposPerProject int `yaml:"repos_per_project" json:"repos_per_project"`
	PRsPerRepo      int `yaml:"prs_per_repo" json:"prs_per_repo"`
	CommentsPerPR   int `yaml:"comments_per_pr" json:"comments_per_pr"`
}

// Duration is a time.Duration written as "10s" in experiment files.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 10s or 500ms", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as "10s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "10s" (results.json).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// The operations of the mix.
const (
	OpViewPR       = "view_pr"       // GET a pull request
	OpListPRs      = "list_prs"      // GET a repository's open pull requests
	OpBrowseRepos  = "browse_repos"  // GET a project's repositories
	OpListComments = "list_comments" // GET a pull request's comments
	OpAddComment   = "add_comment"   // POST a comment
	OpUpdatePR     = "update_pr"     // GET then PUT a pull request's title with its version
	OpCreateRepo   = "create_repo"   // POST a new repository (git init on the shared disk)
)

// Ops lists the operations in report order.
var Ops = []string{OpViewPR, OpListPRs, OpBrowseRepos, OpListComments, OpAddComment, OpUpdatePR, OpCreateRepo}

// LoadExperiment reads and checks an experiment file.
func LoadExperiment(path string) (*Experiment, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	e, err := ParseExperiment(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, b, nil
}

// ParseExperiment decodes an experiment, rejecting unknown fields, and
// checks it; an error names the field at fault.
func ParseExperiment(b []byte) (*Experiment, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var e Experiment
	if err := dec.Decode(&e); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the experiment file is empty")
		}
		return nil, err
	}
	return &e, e.Validate()
}

// Validate fills defaults and rejects nonsense, naming the field.
func (e *Experiment) Validate() error {
	if e.Name == "" {
		e.Name = "coupling"
	}
	if e.Invalidation == "" {
		e.Invalidation = "async"
	}
	if e.Backups == nil {
		one := 1
		e.Backups = &one
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(e.Modes) == 0 {
		bad("modes", "at least one of local, distributed, near is required")
	}
	for i, m := range e.Modes {
		if m != "local" && m != "distributed" && m != "near" {
			bad(fmt.Sprintf("modes[%d]", i), "%q: want local, distributed or near", m)
		} else if slices.Index(e.Modes, m) != i {
			bad(fmt.Sprintf("modes[%d]", i), "%q is listed twice", m)
		}
	}
	if len(e.Sizes) == 0 {
		bad("sizes", "at least one cluster size is required")
	}
	for i, n := range e.Sizes {
		if n < 1 || n > 16 {
			bad(fmt.Sprintf("sizes[%d]", i), "%d: want 1 to 16 nodes", n)
		}
	}
	if e.Invalidation != "async" && e.Invalidation != "sync" {
		bad("invalidation", "%q: want async or sync", e.Invalidation)
	}
	if *e.Backups < 0 || *e.Backups > 2 {
		bad("backups", "%d: want 0, 1 or 2", *e.Backups)
	}
	e.validateStages(bad)
	e.validateMix(bad)
	e.validateData(bad)
	if e.Zipf <= 1 {
		bad("zipf", "%g: the skew must be greater than 1 (1.1 is mild, 2 is steep)", e.Zipf)
	}
	if e.Quiet.MaxOtherCPU < 0 || e.Quiet.MaxOtherCPU > 1 {
		bad("quiet.max_other_cpu", "%g: want a share of the machine from 0 to 1", e.Quiet.MaxOtherCPU)
	}
	if e.Quiet.Retries < 0 || e.Quiet.Retries > 10 {
		bad("quiet.retries", "%d: want 0 to 10", e.Quiet.Retries)
	}
	if e.LagProbe < 0 {
		bad("lag_probe", "%v is negative", e.LagProbe.D())
	}
	e.validateSwitch(bad)
	return errors.Join(errs...)
}

func (e *Experiment) validateSwitch(bad func(string, string, ...any)) {
	s := e.Switch
	if s == nil {
		return
	}
	if s.Warmup == nil {
		w := e.Stages.Warmup
		s.Warmup = &w
	}
	if s.Settle == nil {
		q := Duration(s.Every.D() / 4)
		s.Settle = &q
	}
	if s.Nodes < 1 || s.Nodes > 16 {
		bad("switch.nodes", "%d: want 1 to 16 nodes", s.Nodes)
	}
	if s.Clients < 1 || s.Clients > 1024 {
		bad("switch.clients", "%d: want 1 to 1024 clients", s.Clients)
	}
	if len(s.Modes) < 2 {
		bad("switch.modes", "want at least two modes: the one the cluster starts in, then each it switches to")
	}
	for i, m := range s.Modes {
		switch {
		case m != "local" && m != "distributed" && m != "near":
			bad(fmt.Sprintf("switch.modes[%d]", i), "%q: want local, distributed or near", m)
		case i > 0 && m == s.Modes[i-1]:
			bad(fmt.Sprintf("switch.modes[%d]", i), "%q is the mode before it: a switch must change the mode", m)
		}
	}
	if s.Every.D() < time.Second {
		bad("switch.every", "%v: want at least 1s between switches", s.Every.D())
	}
	switch {
	case s.Bucket.D() < 50*time.Millisecond:
		bad("switch.bucket", "%v: want at least 50ms", s.Bucket.D())
	case s.Bucket > s.Every:
		bad("switch.bucket", "%v is longer than switch.every (%v)", s.Bucket.D(), s.Every.D())
	case s.Window()/s.Bucket.D() > maxBuckets:
		bad("switch.bucket", "%v makes %d buckets of the %v window; at most %d", s.Bucket.D(), s.Window()/s.Bucket.D(), s.Window(), maxBuckets)
	}
	if *s.Warmup < 0 {
		bad("switch.warmup", "%v is negative", s.Warmup.D())
	}
	if *s.Settle < 0 || *s.Settle >= s.Every {
		bad("switch.settle", "%v: want at least 0 and less than switch.every (%v)", s.Settle.D(), s.Every.D())
	}
}

func (e *Experiment) validateStages(bad func(string, string, ...any)) {
	s := &e.Stages
	if len(s.Clients) == 0 {
		bad("stages.clients", "at least one client count is required")
	}
	for i, c := range s.Clients {
		if c < 1 || c > 1024 {
			bad(fmt.Sprintf("stages.clients[%d]", i), "%d: want 1 to 1024 clients", c)
		}
	}
	if s.Duration.D() < 100*time.Millisecond {
		bad("stages.duration", "%v: want at least 100ms", s.Duration.D())
	}
	if s.Warmup < 0 {
		bad("stages.warmup", "%v is negative", s.Warmup.D())
	}
}

func (e *Experiment) validateMix(bad func(string, string, ...any)) {
	total := 0
	for op, w := range e.Mix {
		if !slices.Contains(Ops, op) {
			bad("mix."+op, "unknown operation; want one of %s", strings.Join(Ops, ", "))
			continue
		}
		if w < 0 {
			bad("mix."+op, "weight %d is negative", w)
		}
		total += w
	}
	if total <= 0 {
		bad("mix", "the weights must add up to more than 0")
	}
}

func (e *Experiment) validateData(bad func(string, string, ...any)) {
	d := e.Data
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{{"users", d.Users, 0}, {"projects", d.Projects, 1}, {"repos_per_project", d.ReposPerProject, 1},
		{"prs_per_repo", d.PRsPerRepo, 1}, {"comments_per_pr", d.CommentsPerPR, 0}} {
		if f.v < f.min || f.v > 100000 {
			bad("data."+f.name, "%d: want %d to 100000", f.v, f.min)
		}
	}
}

// Arm is one cluster configuration of an experiment.
type Arm struct {
	Mode  string `json:"mode"`
	Nodes int    `json:"nodes"`
}

// Name is "local×3".
func (a Arm) Name() string { return fmt.Sprintf("%s×%d", a.Mode, a.Nodes) }

// Arms is every mode at every size, sizes first then modes, so that the
// modes of one size run next to each other.
func (e *Experiment) Arms() []Arm {
	var arms []Arm
	for _, n := range e.Sizes {
		for _, m := range e.Modes {
			arms = append(arms, Arm{Mode: m, Nodes: n})
		}
	}
	return arms
}
