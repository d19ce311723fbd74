package scheduler

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func intervalRecord(t *testing.T) (record, compiled) {
	t.Helper()
	j := Job{ID: "j", Runner: "r", Mode: RunOncePerCluster, Schedule: Every(time.Minute, t0.Add(time.Minute))}
	c, err := j.Schedule.compile()
	if err != nil {
		t.Fatal(err)
	}
	return newRecord(j, c, t0), c
}

var lim = claimLimits{misfire: 5 * time.Second, history: 3}

func TestClaimRun(t *testing.T) {
	r, c := intervalRecord(t)
	if !r.NextRun.Equal(t0.Add(time.Minute)) {
		t.Fatalf("first run %v", r.NextRun)
	}
	if _, _, ok := claimRun(r, c, t0.Add(59*time.Second), "n1", 1, lim); ok {
		t.Fatal("claimed before due")
	}
	// A little late: the next fire time follows the claimed one.
	r2, fire, ok := claimRun(r, c, t0.Add(62*time.Second), "n1", 1, lim)
	if !ok || !fire.Equal(t0.Add(time.Minute)) || !r2.NextRun.Equal(t0.Add(2*time.Minute)) || r2.Misfires != 0 {
		t.Fatalf("claim: ok %v fire %v next %v misfires %d", ok, fire, r2.NextRun, r2.Misfires)
	}
	if h := r2.History; len(h) != 1 || h[0].Outcome != OutcomeRunning || h[0].Node != "n1" || !r2.claimedBy(1) {
		t.Fatalf("history %+v", h)
	}
	if len(r.History) != 0 {
		t.Fatal("claimRun changed its input's history")
	}
	// The claimed record is not due again for the same fire time.
	if _, _, ok := claimRun(r2, c, t0.Add(62*time.Second), "n2", 2, lim); ok {
		t.Fatal("the same fire time was claimable twice")
	}
}

func TestClaimRunCatchesUpWithinThreshold(t *testing.T) {
	r, c := intervalRecord(t)
	// 3 s after the second slot: within the threshold, slots run in turn.
	now := t0.Add(2*time.Minute + 3*time.Second)
	var fires []time.Time
	for {
		var fire time.Time
		var ok bool
		if r, fire, ok = claimRun(r, c, now, "n1", 1, lim); !ok {
			break
		}
		fires = append(fires, fire)
	}
	if len(fires) != 2 || r.Misfires != 0 {
		t.Fatalf("fires %v misfires %d", fires, r.Misfires)
	}
}

func TestClaimRunMisfireFiresOnce(t *testing.T) {
	r, c := intervalRecord(t)
	now := t0.Add(10 * time.Hour) // 600 slots missed
	r, fire, ok := claimRun(r, c, now, "n1", 1, lim)
	if !ok || !fire.Equal(t0.Add(time.Minute)) {
		t.Fatalf("fire %v ok %v", fire, ok)
	}
	if !r.NextRun.After(now) || r.NextRun.Sub(now) > time.Minute || r.Misfires != 1 {
		t.Fatalf("next %v (now %v) misfires %d", r.NextRun, now, r.Misfires)
	}
	if _, _, ok := claimRun(r, c, now, "n1", 2, lim); ok {
		t.Fatal("a second run for the missed slots")
	}
}

func TestClaimRunNowAndPause(t *testing.T) {
	r, c := intervalRecord(t)
	r.Paused = true
	if _, _, ok := claimRun(r, c, t0.Add(time.Hour), "n1", 1, lim); ok {
		t.Fatal("a paused job ran")
	}
	r.RunNowAt = t0.Add(30 * time.Second)
	r2, fire, ok := claimRun(r, c, t0.Add(31*time.Second), "n1", 1, lim)
	if !ok || !fire.Equal(r.RunNowAt) || !r2.RunNowAt.IsZero() || !r2.NextRun.Equal(r.NextRun) {
		t.Fatalf("run-now: ok %v fire %v record %+v", ok, fire, r2)
	}
}

func TestHistoryBoundedAndFinished(t *testing.T) {
	r, c := intervalRecord(t)
	now := t0
	for i := range 5 {
		now = now.Add(time.Minute)
		var ok bool
		r, _, ok = claimRun(r, c, now, "n1", uint64(i+1), lim)
		if !ok {
			t.Fatalf("claim %d", i)
		}
	}
	if len(r.History) != lim.history || r.History[0].Token != 3 {
		t.Fatalf("history %+v", r.History)
	}
	r, ok := finishRun(r, 4, now, errors.New("boom"))
	if !ok || r.History[1].Outcome != OutcomeFailed || r.History[1].Error != "boom" {
		t.Fatalf("finish: %v %+v", ok, r.History)
	}
	if _, ok := finishRun(r, 1, now, nil); ok {
		t.Fatal("finished a trimmed run")
	}
	long := make([]byte, 10000)
	r, _ = finishRun(r, 5, now, errors.New(string(long)))
	if len(r.History[2].Error) > maxErrorText+4 {
		t.Fatalf("error text of %d bytes kept", len(r.History[2].Error))
	}
}

func TestLostRuns(t *testing.T) {
	h := []Run{
		{Node: "n1", Outcome: OutcomeRunning}, // n1 ran again later: lost
		{Node: "n2", Outcome: OutcomeRunning}, // n2 is dead: lost
		{Node: "n1", Outcome: OutcomeSucceeded},
		{Node: "n3", Outcome: OutcomeRunning}, // still running
	}
	got := lostRuns(h, map[string]bool{"n1": true, "n3": true})
	want := []Outcome{OutcomeLost, OutcomeLost, OutcomeSucceeded, OutcomeRunning}
	for i := range got {
		if got[i].Outcome != want[i] {
			t.Fatalf("run %d: %s, want %s", i, got[i].Outcome, want[i])
		}
	}
	if h[0].Outcome != OutcomeRunning {
		t.Fatal("lostRuns changed its input")
	}
}

// Each fire time ranks the nodes afresh, and every node gets each rank
// about equally often.
func TestClaimRankSpreads(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	first := map[string]int{}
	for i := range 3000 {
		due := t0.Add(time.Duration(i) * time.Second)
		ranks := map[int]bool{}
		for _, n := range nodes {
			k := claimRank("job", due, n, nodes)
			if ranks[k] {
				t.Fatalf("fire time %d: two nodes ranked %d", i, k)
			}
			ranks[k] = true
			if k == 0 {
				first[n]++
			}
		}
	}
	for _, n := range nodes {
		if first[n] < 850 || first[n] > 1150 {
			t.Fatalf("first-ranked counts %v: not spread", first)
		}
	}
	if k := claimRank("job", t0, "n4", nodes); k != 3 && k > 3 {
		t.Fatalf("a node outside the list ranked %d", k)
	}
}
