package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A running 3-node cluster switches its cache mode LOCAL → DISTRIBUTED →
// NEAR → LOCAL with `shoal cache switch`, while writers update pull
// requests through every node and readers read them through every node:
// no request fails, and no read that began after an update was
// acknowledged returns an older version.
func TestLiveModeSwitchProcesses(t *testing.T) {
	rc := startRESTCluster(t, 3, 230, "--cache-mode", "local", "--invalidation", "sync")
	ids := rc.prIDs[:min(4, len(rc.prIDs))]
	var mu sync.Mutex
	acked := map[int64]int64{} // pull request → newest acknowledged version
	var reads, writes, stale, failed atomic.Int64
	var firstFail atomic.Value
	fail := func(format string, args ...any) {
		failed.Add(1)
		firstFail.CompareAndSwap(nil, fmt.Sprintf(format, args...))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, id := range ids {
		wg.Add(1)
		go func() { // one writer per pull request: no conflicts of its own
			defer wg.Done()
			node := 1 + w%3
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var pr prJSON
				code, b, err := rc.send(node, restReq{method: http.MethodGet, path: rc.prPath(id), user: "admin", pw: restAdminPW})
				if err != nil || code != http.StatusOK || json.Unmarshal(b, &pr) != nil {
					fail("node%d GET pr %d: %d %v %s", node, id, code, err, b)
					continue
				}
				body, _ := json.Marshal(map[string]any{"version": pr.Version, "title": fmt.Sprintf("switch %d/%d", w, n)})
				code, b, err = rc.send(node, restReq{method: http.MethodPut, path: rc.prPath(id), body: body, user: "admin", pw: restAdminPW})
				if err != nil || code != http.StatusOK {
					fail("node%d PUT pr %d at version %d: %d %v %s", node, id, pr.Version, code, err, b)
					continue
				}
				writes.Add(1)
				mu.Lock()
				acked[id] = max(acked[id], pr.Version+1)
				mu.Unlock()
				node = 1 + (node % 3)
			}
		}()
	}
	for r := 1; r <= 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := ids[rng.IntN(len(ids))]
				mu.Lock()
				floor := acked[id]
				mu.Unlock()
				var pr prJSON
				code, b, err := rc.send(r, restReq{method: http.MethodGet, path: rc.prPath(id), user: "admin", pw: restAdminPW})
				if err != nil || code != http.StatusOK || json.Unmarshal(b, &pr) != nil {
					fail("node%d GET pr %d: %d %v %s", r, id, code, err, b)
					continue
				}
				reads.Add(1)
				if pr.Version < floor {
					stale.Add(1)
					t.Errorf("stale read through node%d: pull request %d at version %d after version %d was acknowledged", r, id, pr.Version, floor)
				}
			}
		}()
	}
	steady := func() {
		w := writes.Load()
		deadline := time.Now().Add(30 * time.Second)
		for writes.Load() < w+10 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for k, mode := range []string{"distributed", "near", "local"} {
		steady()
		node := rc.c.Nodes()[k%3]
		cmd := exec.Command(shoalBin, "cache", "switch", mode, "--addr", node.HTTP, "--user", "admin")
		cmd.Env = append(os.Environ(), "SHOAL_PASSWORD="+restAdminPW)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("shoal cache switch %s: %v\n%s", mode, err, out)
		}
		t.Logf("switch to %s through %s: %v (reads %d, writes %d so far)\n%s", mode, node.Name, time.Since(start).Round(time.Millisecond),
			reads.Load(), writes.Load(), strings.TrimSpace(string(out)))
		for i := 1; i <= 3; i++ {
			var v struct {
				Cache struct{ Mode, Phase string }
			}
			rc.get(i, "/v1/cluster", &v)
			if v.Cache.Mode != mode {
				t.Errorf("node%d runs %+v after the switch to %s", i, v.Cache, mode)
			}
		}
	}
	steady()
	close(stop)
	wg.Wait()
	t.Logf("reads %d, writes %d, stale %d, failed %d", reads.Load(), writes.Load(), stale.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed; the first: %v", failed.Load(), firstFail.Load())
	}
	if writes.Load() < 40 {
		t.Fatalf("only %d writes: the workload did not run through the switches", writes.Load())
	}
	var mode struct {
		Cluster struct{ Mode, Phase string }
	}
	rc.get(2, "/v1/cache/mode", &mode)
	if mode.Cluster.Mode != "local" || mode.Cluster.Phase != "stable" {
		t.Errorf("GET /v1/cache/mode: %+v", mode)
	}
	// Only administrators may switch.
	code, _, err := rc.send(1, restReq{method: http.MethodPut, path: "/v1/cache/mode", body: []byte(`{"mode":"near"}`)})
	if err != nil || code != http.StatusUnauthorized {
		t.Errorf("an anonymous switch: %d %v", code, err)
	}
	code, b := rc.admin(1, http.MethodPut, "/v1/cache/mode", []byte(`{"mode":"far"}`))
	if code != http.StatusBadRequest || !strings.Contains(string(b), "far") {
		t.Errorf("a switch to an unknown mode: %d %s", code, b)
	}
}
