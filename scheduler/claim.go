package scheduler

import (
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// record is a job with its schedule state and history: the value stored
// under jobKey(ID) for a clustered job, and the in-memory state of a local
// one. Every change to a clustered record is a CompareAndSet on its
// version.
type record struct {
	Job    Job  `msgpack:"j"`
	Paused bool `msgpack:"pa,omitempty"`
	// NextRun is the next scheduled fire time; zero when there is none.
	NextRun time.Time `msgpack:"n,omitempty"`
	// RunNowAt is an operator's pending run-now request.
	RunNowAt time.Time `msgpack:"rn,omitempty"`
	Misfires uint64    `msgpack:"mf,omitempty"`
	History  []Run     `msgpack:"h,omitempty"`
	Created  time.Time `msgpack:"c"`
}

const (
	jobPrefix    = "scheduler/jobs/"
	runnerPrefix = "scheduler/runners/"
	// maxErrorText bounds the error text kept per run: history lives in
	// the job's store value, which must stay small.
	maxErrorText = 256
)

func jobKey(id string) string       { return jobPrefix + id }
func runnerKey(node string) string  { return runnerPrefix + node }
func encodeRecord(r *record) []byte { b, _ := msgpack.Marshal(r); return b }

func decodeRecord(b []byte) (record, error) {
	var r record
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("scheduler: undecodable job record: %w", err)
	}
	return r, nil
}

// newRecord is a job's record when it is first scheduled at now.
func newRecord(j Job, c compiled, now time.Time) record {
	r := record{Job: j, Created: now}
	r.NextRun, _ = c.first(now)
	return r
}

// dueAt is when the record next needs a run: the earlier of its next fire
// time (unless paused) and a pending run-now. False if neither.
func (r *record) dueAt() (time.Time, bool) {
	var t time.Time
	ok := false
	if !r.Paused && !r.NextRun.IsZero() {
		t, ok = r.NextRun, true
	}
	if !r.RunNowAt.IsZero() && (!ok || r.RunNowAt.Before(t)) {
		t, ok = r.RunNowAt, true
	}
	return t, ok
}

// claimLimits are the rules claimRun applies.
type claimLimits struct {
	misfire time.Duration
	history int
}

// claimRun is the claim of a due run, as a pure function: the record as it
// must be written (by CompareAndSet on the version it was read at) to
// claim the run, and the run's fire time. False when nothing is due at
// now.
//
// The next fire time is computed from the fire time being claimed, so a
// node that is a little late still runs every slot; but when that next
// time is already more than lim.misfire in the past (the cluster was down
// or stalled), the missed slots are coalesced: the next fire time becomes
// the first one after now. A pause therefore costs one run, not one per
// missed slot.
func claimRun(r record, c compiled, now time.Time, node string, token uint64, lim claimLimits) (record, time.Time, bool) {
	due, ok := r.dueAt()
	if !ok || due.After(now) {
		return r, time.Time{}, false
	}
	fire := due
	if !r.RunNowAt.IsZero() && r.RunNowAt.Equal(due) {
		r.RunNowAt = time.Time{}
	} else {
		next, more := c.next(fire)
		if more && now.Sub(next) > lim.misfire {
			next, more = c.next(now)
			r.Misfires++
		}
		if !more {
			next = time.Time{}
		}
		r.NextRun = next
	}
	h := make([]Run, 0, len(r.History)+1)
	h = append(h, r.History...)
	h = append(h, Run{FireTime: fire, Start: now, Node: node, Outcome: OutcomeRunning, Token: token})
	if over := len(h) - lim.history; over > 0 {
		h = h[over:]
	}
	r.History = h
	return r, fire, true
}

// finishRun records the end of the run started by the claim with token.
// False if the history no longer holds it (trimmed, or the job replaced).
func finishRun(r record, token uint64, end time.Time, runErr error) (record, bool) {
	for i := len(r.History) - 1; i >= 0; i-- {
		if r.History[i].Token != token {
			continue
		}
		h := append([]Run(nil), r.History...)
		h[i].End, h[i].Outcome = end, OutcomeSucceeded
		if runErr != nil {
			h[i].Outcome, h[i].Error = OutcomeFailed, truncate(runErr.Error(), maxErrorText)
		}
		r.History = h
		return r, true
	}
	return r, false
}

// claimedBy reports whether the record holds the claim with token.
func (r *record) claimedBy(token uint64) bool {
	for _, h := range r.History {
		if h.Token == token {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
