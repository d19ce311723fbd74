package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/goleak"
)

var shoalBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-chaos-")
	if err != nil {
		panic(err)
	}
	shoalBin = filepath.Join(dir, "shoal")
	if out, err := exec.Command("go", "build", "-o", shoalBin, "../../cmd/shoal").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building shoal: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			err := goleak.Find()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goroutines leaked after the tests passed:\n%v\n", err)
				code = 1
				break
			}
		}
	}
	os.Exit(code)
}

// The short profile against real node processes: LOCAL sync and
// DISTRIBUTED, a pause, a leader kill, a follower kill, a partition when
// root, git pushes with a kill after one, a live switch of the cache mode
// through the other two and back; no violation may be found, and no
// operation may fail through the switch.
func TestShortProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters of node processes")
	}
	var log bytes.Buffer
	rep, err := Run(context.Background(), Config{Binary: shoalBin, Dir: t.TempDir(), Profile: Profiles["short"], Log: &log})
	var out bytes.Buffer
	if rep != nil {
		WriteText(&out, rep)
	}
	t.Logf("progress:\n%s\nreport:\n%s", log.String(), out.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Violations(); n > 0 {
		t.Fatalf("%d violation(s); see the report above", n)
	}
	for _, s := range rep.Settings {
		if s.KV.Result != string(porcupine.Ok) { // Illegal is a violation, above; Unknown: porcupine ran out of time
			t.Logf("%s: the kv check was inconclusive (%s) within %v", s.Setting.Name, s.KV.Result, kvCheckTimeout)
		}
		if s.Staleness.Reads < 100 || s.KV.Ops < 100 {
			t.Errorf("%s: %d reads judged, %d kv operations: the load did not run", s.Setting.Name, s.Staleness.Reads, s.KV.Ops)
		}
		for _, f := range s.Faults {
			if f.Skipped == "" && f.Recovery <= 0 {
				t.Errorf("%s: fault %s has no recovery time", s.Setting.Name, f.Kind)
			}
			// A live switch of the cache mode fails no request (issue 19).
			if f.Kind == FaultModeSwitch && f.Skipped == "" && f.Failed > 0 {
				t.Errorf("%s: %d of %d operations failed through the mode switch (%s): %s", s.Setting.Name, f.Failed, f.Ops,
					f.Detail, strings.Join(errorCounts(f.FailedByError), "; "))
			}
		}
	}
}

// The stale-read checker must catch a stale read, or a passing run proves
// nothing; in a setting without the promise it measures instead.
func TestRecorderJudgesReads(t *testing.T) {
	t0 := time.Now()
	r := newRecorder(true, []int64{7})
	r.ackPR(7, 1, "a", 1, t0)
	r.ackPR(7, 2, "b", 2, t0)
	after := time.Now().Add(time.Millisecond)
	r.readPR(7, 3, t0, t0, 1, "a") // began before the acknowledgements: fine
	if len(r.violations) != 0 {
		t.Fatalf("a read that began before the write was judged stale: %+v", r.violations)
	}
	r.readPR(7, 3, after, after, 2, "b")
	if len(r.violations) != 0 {
		t.Fatalf("a fresh read was judged stale: %+v", r.violations)
	}
	r.readPR(7, 3, after, after, 1, "a")
	if len(r.violations) != 1 || r.violations[0].Check != "stale read" || len(r.violations[0].Ops) != 3 {
		t.Fatalf("a stale read was not caught: %+v", r.violations)
	}
	r.readPR(7, 3, after, after, 2, "x")
	if len(r.violations) != 2 || r.violations[1].Check != "wrong content" {
		t.Fatalf("a read of the acknowledged version with other content was not caught: %+v", r.violations)
	}
	r.ackComment(7, "chaos c1", 1, t0)
	after = time.Now().Add(time.Millisecond)
	r.readComments(7, 2, after, after, map[string]bool{})
	if len(r.violations) != 3 || r.violations[2].Check != "stale comment list" {
		t.Fatalf("a comment list missing an acknowledged comment was not caught: %+v", r.violations)
	}
	r.readComments(7, 2, after, after, map[string]bool{"chaos c1": true})
	if len(r.violations) != 3 {
		t.Fatalf("a complete comment list was judged stale: %+v", r.violations)
	}

	// LOCAL async: measured, and judged against the bound once the fault
	// windows are known.
	a := newRecorder(false, []int64{7})
	a.ackPR(7, 1, "a", 1, t0)
	at := a.prs[7][0].at
	a.readPR(7, 2, at.Add(500*time.Millisecond), at.Add(time.Second), 0, "")
	a.readPR(7, 2, at.Add(AsyncBound+time.Second), at.Add(AsyncBound+2*time.Second), 0, "")
	if len(a.violations) != 0 || len(a.stale) != 2 {
		t.Fatalf("async: %d stale samples, violations %+v", len(a.stale), a.violations)
	}
	lags, maxLag, _, inFault, _ := a.judgeStale(nil)
	if len(lags) != 2 || maxLag != AsyncBound+time.Second || inFault != 0 || len(a.violations) != 1 ||
		!strings.Contains(a.violations[0].Check, "beyond the async bound") {
		t.Fatalf("async, no fault: lags %v, max %v, violations %+v", lags, maxLag, a.violations)
	}
	// The same reads while a partition held the write's invalidation
	// back: allowed until AsyncBound after the heal.
	a.violations = nil
	_, _, afterHeal, inFault, byFault := a.judgeStale([]window{{kind: FaultPartition, start: at.Add(-time.Second), healed: at.Add(2 * time.Second)}})
	if len(a.violations) != 0 || inFault != 2 || afterHeal != AsyncBound-time.Second || byFault[FaultPartition] == nil || byFault[FaultPartition].Reads != 2 {
		t.Fatalf("async, in a fault: %d in fault, %v after the heal, violations %+v", inFault, afterHeal, a.violations)
	}
	a.readPR(7, 2, at.Add(2*time.Second+AsyncBound+time.Millisecond), at.Add(6*time.Second), 0, "")
	a.violations = nil
	a.judgeStale([]window{{start: at.Add(-time.Second), healed: at.Add(2 * time.Second)}})
	if len(a.violations) != 1 {
		t.Fatalf("async: a read past the bound after the heal was not caught: %+v", a.violations)
	}

	// A promise that changes (a mode switch) is judged over the whole
	// interval from the acknowledgement to the read.
	m := newRecorder(true, nil)
	m.setStrict(m.start.Add(time.Second), false)
	m.setStrict(m.start.Add(2*time.Second), true)
	for _, c := range []struct {
		a, b time.Duration
		want bool
	}{{0, 500 * time.Millisecond, true}, {0, 1500 * time.Millisecond, false}, {1500 * time.Millisecond, 3 * time.Second, false},
		{2500 * time.Millisecond, 3 * time.Second, true}} {
		if got := m.strictThroughout(m.start.Add(c.a), m.start.Add(c.b)); got != c.want {
			t.Errorf("strict from %v to %v: %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// The kv model accepts linearizable histories, with open calls, and
// rejects a lost write, a stale read and a compare-and-set that applied
// against the wrong version.
func TestKVModel(t *testing.T) {
	put := func(v string, ver uint64, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: kvInput{Key: "k", Op: kvPut, Value: v}, Output: kvOutput{OK: true, Version: ver}, Call: call, Return: ret}
	}
	get := func(v string, ver uint64, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: kvInput{Key: "k", Op: kvGet}, Output: kvOutput{Found: v != "", Value: v, Version: ver}, Call: call, Return: ret}
	}
	cas := func(expect uint64, v string, out kvOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: kvInput{Key: "k", Op: kvCAS, Value: v, Expect: expect}, Output: out, Call: call, Return: ret}
	}
	open := func(v string, call int64) porcupine.Operation {
		return porcupine.Operation{Input: kvInput{Key: "k", Op: kvPut, Value: v}, Output: kvOutput{Unknown: true}, Call: call, Return: math.MaxInt64}
	}
	for _, c := range []struct {
		name string
		ok   bool
		h    []porcupine.Operation
	}{
		{"sequential", true, []porcupine.Operation{put("a", 5, 0, 1), get("a", 5, 2, 3), cas(5, "b", kvOutput{OK: true, Version: 8}, 4, 5), get("b", 8, 6, 7)}},
		{"concurrent read sees either", true, []porcupine.Operation{put("a", 5, 0, 1), put("b", 6, 2, 10), get("a", 5, 3, 4), get("b", 6, 11, 12)}},
		{"open call applies late", true, []porcupine.Operation{open("a", 0), get("", 0, 1, 2), get("a", 9, 3, 4), get("a", 9, 5, 6)}},
		{"open call never applies", true, []porcupine.Operation{put("x", 3, 0, 1), open("a", 2), get("x", 3, 3, 4)}},
		{"cas refused", true, []porcupine.Operation{put("a", 5, 0, 1), cas(4, "b", kvOutput{Mismatch: true}, 2, 3), get("a", 5, 4, 5)}},
		{"stale read", false, []porcupine.Operation{put("a", 5, 0, 1), put("b", 6, 2, 3), get("a", 5, 4, 5)}},
		{"lost write", false, []porcupine.Operation{put("a", 5, 0, 1), get("", 0, 2, 3)}},
		{"cas applied against the wrong version", false, []porcupine.Operation{put("a", 5, 0, 1), cas(4, "b", kvOutput{OK: true, Version: 7}, 2, 3)}},
		{"versions go back", false, []porcupine.Operation{put("a", 5, 0, 1), put("b", 4, 2, 3)}},
		{"open call read back, then lost", false, []porcupine.Operation{open("a", 0), get("a", 9, 1, 2), get("", 0, 3, 4)}},
	} {
		if got := porcupine.CheckOperations(kvModel, c.h); got != c.ok {
			t.Errorf("%s: linearizable %v, want %v", c.name, got, c.ok)
		}
	}
}

// CHAOS_KV_HISTORY=path checks a kv history a run dumped (kv-history.json).
func TestKVHistoryFile(t *testing.T) {
	path := os.Getenv("CHAOS_KV_HISTORY")
	if path == "" {
		t.Skip("set CHAOS_KV_HISTORY to a kv-history.json")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw []struct {
		Client       int
		In           kvInput
		Out          kvOutput
		Call, Return int64
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	var ops []porcupine.Operation
	for _, o := range raw {
		ops = append(ops, porcupine.Operation{ClientId: o.Client, Input: o.In, Output: o.Out, Call: o.Call, Return: o.Return})
	}
	start := time.Now()
	res, _ := porcupine.CheckOperationsVerbose(kvModel, ops, 10*time.Minute)
	t.Logf("%d operations: %s in %v", len(ops), res, time.Since(start))
}

// Failed operations are counted by error, with what differs between like
// failures (addresses, numbers) masked and the status kept.
func TestFailureClasses(t *testing.T) {
	for _, c := range []struct {
		code int
		body string
		err  error
		want string
	}{
		{503, `{"errors":[{"message":"too many password checks at once; retry later"}]}`, nil, "503: too many password checks at once; retry later"},
		{500, `{"error":"l2cache: written under local (epoch 12) in 35ms"}`, nil, "500: l2cache: written under local (epoch N) in N"},
		{0, "", fmt.Errorf("Put %q: %w", "http://10.213.1.2:8081/v1/x", errors.New("context deadline exceeded")), `Put "http://ADDR/v1/x": context deadline exceeded`},
		{502, "bad\ngateway", nil, "502: bad gateway"},
	} {
		if got := failure(c.code, []byte(c.body), c.err); got != c.want {
			t.Errorf("failure(%d, %q, %v) = %q, want %q", c.code, c.body, c.err, got, c.want)
		}
	}
}
