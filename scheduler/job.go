package scheduler

import (
	"context"
	"time"
)

// RunMode says where a job's runs happen.
type RunMode string

const (
	// RunOncePerCluster: the job is stored in the consistent store and
	// each fire time runs on one node of the cluster, the one that claims
	// it first.
	RunOncePerCluster RunMode = "cluster"
	// RunLocally: the job lives in this node's memory and runs on this
	// node; every node that schedules it runs it.
	RunLocally RunMode = "local"
)

// Job is a scheduled job.
type Job struct {
	// ID names the job, unique per node (local jobs) or per cluster
	// (clustered ones). 1 to 200 bytes, no "/".
	ID string `msgpack:"id" json:"id"`
	// Runner is the key of the Runner that runs it.
	Runner string `msgpack:"rn" json:"runner"`
	// Params are handed to the runner, msgpack-encoded by convention; the
	// scheduler does not read them. Bounded by Config.MaxParams.
	Params   []byte   `msgpack:"p,omitempty" json:"params,omitempty"`
	Schedule Schedule `msgpack:"s" json:"schedule"`
	Mode     RunMode  `msgpack:"m" json:"mode"`
}

// Request is what a Runner is given for one run.
type Request struct {
	JobID  string
	Params []byte
	// FireTime is the scheduled time of this run; it identifies the run
	// (each fire time runs at most once per cluster).
	FireTime time.Time
	// Node is the node running it.
	Node string
}

// Runner runs a job. Run may be called concurrently for different jobs and
// for different fire times of one job (on different nodes; on one node a
// job's runs do not overlap). It should return when ctx ends (the
// scheduler is closing). An error or a panic marks the run failed; the
// schedule continues either way.
type Runner interface {
	Run(ctx context.Context, req Request) error
}

// RunnerFunc adapts a function to a Runner.
type RunnerFunc func(ctx context.Context, req Request) error

func (f RunnerFunc) Run(ctx context.Context, req Request) error { return f(ctx, req) }

// Outcome is how a run ended.
type Outcome string

const (
	// OutcomeRunning: claimed and started; not finished yet, or its node
	// died before it could say (shown as lost once the node is gone).
	OutcomeRunning   Outcome = "running"
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	// OutcomeLost: the node that ran it is gone and never reported.
	OutcomeLost Outcome = "lost"
)

// Run is one entry of a job's history.
type Run struct {
	FireTime time.Time `msgpack:"f" json:"fire_time"`
	Start    time.Time `msgpack:"s" json:"start"`
	End      time.Time `msgpack:"e,omitempty" json:"end,omitempty"`
	Node     string    `msgpack:"n" json:"node"`
	Outcome  Outcome   `msgpack:"o" json:"outcome"`
	Error    string    `msgpack:"x,omitempty" json:"error,omitempty"`
	// Token identifies the claim that started the run.
	Token uint64 `msgpack:"t" json:"-"`
}

// State is a job's state as Status reports it.
type State string

const (
	StateScheduled State = "scheduled"
	StatePaused    State = "paused"
	// StateWaiting: due or scheduled, but no live node has registered the
	// job's runner; it runs once one does.
	StateWaiting State = "waiting: no runner"
	// StateDone: a schedule with no more fire times (a run-once job that
	// ran).
	StateDone State = "done"
)

// Status is a job as operators see it.
type Status struct {
	Job
	State   State     `json:"state"`
	Paused  bool      `json:"paused"`
	NextRun time.Time `json:"next_run,omitzero"`
	// RunNowAt is set while an operator's run-now request waits.
	RunNowAt time.Time `json:"run_now_at,omitzero"`
	// Version is the store version of a clustered job (0 for local jobs).
	Version uint64 `json:"version,omitempty"`
	// Runners are the live nodes that have registered the job's runner.
	Runners []string `json:"runners"`
	// Misfires counts fire times skipped because the job was too late.
	Misfires uint64 `json:"misfires"`
	// History is the latest runs, oldest first.
	History []Run     `json:"history"`
	Created time.Time `json:"created"`
}
