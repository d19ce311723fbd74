package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"
)

// Mount serves Handler(s) on mux at /v1/jobs and everything under it.
func Mount(mux *http.ServeMux, s *Scheduler) {
	h := Handler(s)
	mux.Handle("/v1/jobs", h)
	mux.Handle("/v1/jobs/", h)
}

// Ensure schedules each job, retrying every 500 ms while the store
// cannot take it (a starting cluster has no leader yet), until every one
// is in place, the scheduler is closed, or ctx ends. Nodes that schedule
// the same definitions change nothing: the scheduler treats a repeat as
// no change. It is how a node puts its built-in jobs in place.
func (s *Scheduler) Ensure(ctx context.Context, jobs ...Job) {
	for _, j := range jobs {
		for {
			jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.Schedule(jctx, j)
			cancel()
			if err == nil || errors.Is(err, ErrClosed) {
				break
			}
			s.log.Debug("scheduling a job; will retry", "job", j.ID, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// RunnerRecordRun is the key of RecordRun's runner.
const RunnerRecordRun = "kv.record-run"

// recordRetryFor bounds how long a kv.record-run run retries its write
// while the store has no leader.
const recordRetryFor = 30 * time.Second

// RecordRun is the kv.record-run runner: a job with it makes the
// scheduler's exactly-once promise checkable from outside, as 'shoal
// bench chaos' does. The job's parameters are a key prefix (1 to 200
// bytes of UTF-8); each run writes to store the key PREFIX + fire time
// (Unix nanoseconds, 20 digits, so keys sort by fire time) + "/" + the
// running node's name + "/" + the run's start (Unix nanoseconds), with
// the node, fire time and start time as JSON. Two runs of one fire time
// leave two keys, whichever nodes ran them: a List of the prefix shows
// both. The write is retried while the store has no leader, for up to
// recordRetryFor; then the run fails (the job's history says so).
func RecordRun(store Store) Runner {
	return RunnerFunc(func(ctx context.Context, req Request) error { return recordRun(ctx, store, req) })
}

func recordRun(ctx context.Context, store Store, req Request) error {
	prefix := string(req.Params)
	if prefix == "" || len(prefix) > 200 || !utf8.ValidString(prefix) {
		return fmt.Errorf("%s: the job's parameters must be a key prefix of 1 to 200 bytes of UTF-8", RunnerRecordRun)
	}
	started := time.Now().UTC()
	key := fmt.Sprintf("%s%020d/%s/%020d", prefix, req.FireTime.UnixNano(), req.Node, started.UnixNano())
	val, err := json.Marshal(map[string]any{"node": req.Node, "fire_time": req.FireTime.UTC(), "started": started})
	if err != nil {
		return err
	}
	give := time.NewTimer(recordRetryFor)
	defer give.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = store.Put(pctx, key, val)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-give.C:
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}
