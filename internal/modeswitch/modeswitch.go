// Package modeswitch switches a running cluster's cache mode through its
// admin API (PUT /v1/cache/mode) and follows a switch whose answer left
// the outcome open — a timeout, a broken connection, a 5xx such as raft's
// "outcome unknown", a 409 because an earlier switch is still under way —
// by reading the cluster's mode record (GET /v1/cache/mode) until the
// switch is seen complete or seen not to have happened (then it is sent
// again). The benchmark's switch stage and the chaos checker's
// mode-switch fault both use it.
//
// Sending the PUT again is safe: a PUT of the mode the cluster is already
// switching to waits for that switch, and one whose first attempt's
// compare-and-set lands later fails on the version, never switching twice.
package modeswitch

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/l2cache"
)

// Path is the route of the cluster's cache mode.
const Path = "/v1/cache/mode"

// Doer sends one request to Path of a node as an administrator (method
// GET, or PUT with body) and returns the status and the answer's body; an
// error means there was no answer.
type Doer func(ctx context.Context, method string, body []byte) (status int, answer []byte, err error)

// Result is what a switch saw.
type Result struct {
	// Status is the status of the answer that settled the outcome: 200
	// when the switch was seen complete (by the PUT or by a GET after an
	// open answer), the refusal's status otherwise, 0 if none came.
	Status int
	// Record is the cluster's mode record in the last answer that held
	// one: the completed switch's on success.
	Record l2cache.ModeRecord
	// Open lists the answers that left the outcome open and were
	// followed, oldest first ("PUT: context deadline exceeded").
	Open []string
}

// Options tune Switch.
type Options struct {
	// Poll is how often the record is read while a switch is followed
	// (default 200 ms).
	Poll time.Duration
}

// answer is PUT's and GET's body (the 409's too).
type answer struct {
	Cluster *l2cache.ModeRecord `json:"cluster"`
}

// Switch switches the cluster to mode and returns when every node runs it
// (its record is mode, phase stable), following answers that leave the
// outcome open until ctx ends. A refusal that settles it (400 for an
// unknown mode, 401/403) is returned at once. The error says why the
// switch was not seen to complete.
func Switch(ctx context.Context, do Doer, mode string, o Options) (Result, error) {
	if o.Poll <= 0 {
		o.Poll = 200 * time.Millisecond
	}
	body, _ := json.Marshal(map[string]string{"mode": mode})
	var res Result
	for {
		status, b, err := do(ctx, http.MethodPut, body)
		rec, why := read(status, b, err)
		if rec != nil {
			res.Record = *rec
		}
		res.Status = status
		switch {
		case err == nil && status == http.StatusOK && rec != nil && done(*rec, mode):
			return res, nil
		case err == nil && refused(status):
			return res, fmt.Errorf("PUT %s {\"mode\": %q}: %s", Path, mode, why)
		}
		res.Open = append(res.Open, "PUT: "+why)
		if ctx.Err() != nil {
			return res, fmt.Errorf("the switch to %s was not seen to complete: %s", mode, why)
		}
		// Wait until no switch is under way; if it was ours, done, else
		// (ours did not happen, or an earlier one was under way) again.
		now, err := settle(ctx, do, o.Poll, &res)
		if err != nil {
			return res, fmt.Errorf("the switch to %s was not seen to complete (last PUT: %s): %w", mode, why, err)
		}
		if now.Mode == mode {
			res.Status = http.StatusOK
			return res, nil
		}
	}
}

// refused is whether a status settles the outcome as a refusal (a 4xx
// other than 409, a switch under way, 408 and 429, try again later).
func refused(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusConflict &&
		status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}

// done is whether rec is mode, switched and stable.
func done(rec l2cache.ModeRecord, mode string) bool {
	return rec.Mode == mode && rec.Phase == l2cache.PhaseStable
}

// settle reads the record until its phase is stable and returns it; the
// reads that failed are noted in res.Open (the first of a run of
// identical ones).
func settle(ctx context.Context, do Doer, poll time.Duration, res *Result) (l2cache.ModeRecord, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	last, seen := "", ""
	for {
		status, b, err := do(ctx, http.MethodGet, nil)
		rec, why := read(status, b, err)
		if err == nil && status == http.StatusOK && rec != nil {
			res.Record = *rec
			if rec.Phase == l2cache.PhaseStable {
				return *rec, nil
			}
			seen = rec.String()
			why = "GET: " + seen
		} else {
			if err == nil && refused(status) {
				return l2cache.ModeRecord{}, fmt.Errorf("GET %s: %s", Path, why)
			}
			why = "GET: " + why
		}
		if why != last {
			res.Open = append(res.Open, why)
			last = why
		}
		select {
		case <-ctx.Done():
			// Where the record stood, as last read, and the last read's
			// failure if it failed after that (ctx's end often fails it).
			more := ""
			if w := strings.TrimPrefix(why, "GET: "); w != seen {
				more = " (the last read: " + w + ")"
			}
			return l2cache.ModeRecord{}, fmt.Errorf("%w; the record last read: %s%s", ctx.Err(), cmp.Or(seen, "none"), more)
		case <-t.C:
		}
	}
}

// read decodes an answer's mode record and describes the answer.
func read(status int, b []byte, err error) (*l2cache.ModeRecord, string) {
	if err != nil {
		return nil, err.Error()
	}
	var a answer
	if json.Unmarshal(b, &a) != nil {
		a.Cluster = nil
	}
	why := fmt.Sprintf("status %d", status)
	if msg := httpc.ErrorMessage(b); msg != "" {
		why += ": " + msg
	} else if status != http.StatusOK {
		why += ": " + strings.TrimSpace(string(b[:min(len(b), 200)]))
	}
	if a.Cluster != nil && status == http.StatusOK {
		why += fmt.Sprintf(" with the cluster at %v", *a.Cluster)
	}
	return a.Cluster, why
}
