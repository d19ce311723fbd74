// Package scheduler is shoal's job scheduler: jobs that run on every node
// (RunLocally) or once per fire time somewhere in the cluster
// (RunOncePerCluster), after Atlassian's Caesium, which replaced Quartz's
// database row locks with optimistic concurrency.
//
// A clustered job is one record in the consistent store (package cp)
// under "scheduler/jobs/<id>": its definition, its next fire time, a
// pending run-now, and a bounded history of runs. Every node keeps a copy
// of each record in a local queue ordered by due time. When a run is due,
// a node computes the record as it must be after the run is claimed (next
// fire time advanced, a "running" history entry) and writes it with
// CompareAndSet on the version of its copy. Exactly one node wins each
// version; a loser re-reads the record, sees that the fire time has moved
// on, and waits for the next one. To keep collisions rare, the nodes that
// can run a job are ranked afresh for each fire time (rendezvous hashing)
// and the k-th waits k·Config.ClaimStagger before claiming, by which time
// the winner's announcement has usually arrived. No lock is held while a
// job runs, so a node that dies mid-run loses that run (at most once per
// fire time) and the next fire time is claimed by a live node as usual.
//
// Copies are kept fresh three ways: each change is announced on the
// cluster bus with the new record (topic "scheduler"); a bus report of
// possibly missed messages, and a periodic timer (Config.RefreshInterval),
// re-read every job; and a claim that loses re-reads the job.
//
// Runners are registered per node by key (Register); a node claims only
// jobs whose runner it has. Each node publishes its runner keys under
// "scheduler/runners/<node>", so that Status can show a clustered job that
// no live node can run as waiting.
//
// Time comes from an injectable Clock, so schedules, misfires and pauses
// are tested deterministically with a FakeClock.
package scheduler
