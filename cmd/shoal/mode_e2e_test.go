package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/modeswitch"
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
	// The chaos checker's case (a PUT whose answer is lost, then at once
	// the next switch): the lost PUT goes on, the next switch meets a 409
	// until it has landed, and modeswitch.Switch follows both to the end.
	doer := func(i int, putTimeout time.Duration) modeswitch.Doer {
		return func(ctx context.Context, method string, body []byte) (int, []byte, error) {
			if method == http.MethodPut {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, putTimeout)
				defer cancel()
			}
			var rd io.Reader
			if body != nil {
				rd = bytes.NewReader(body)
			}
			req, err := http.NewRequestWithContext(ctx, method, rc.node(i)+modeswitch.Path, rd)
			if err != nil {
				return 0, nil, err
			}
			req.SetBasicAuth("admin", restAdminPW)
			resp, err := rc.client.Do(req)
			if err != nil {
				return 0, nil, err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, b, err
		}
	}
	for k, next := range [][2]string{{"distributed", "near"}, {"local", "local"}} {
		steady()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		start := time.Now()
		// Given up after 50 ms: the switch is still under way (or, on a
		// slow machine, not yet proposed).
		body, _ := json.Marshal(map[string]string{"mode": next[0]})
		if code, b, err := doer(1+k%3, 50*time.Millisecond)(ctx, http.MethodPut, body); err == nil {
			t.Logf("the switch to %s answered within 50 ms: %d %s", next[0], code, b)
		}
		res, err := modeswitch.Switch(ctx, doer(1+(k+1)%3, time.Minute), next[1], modeswitch.Options{})
		cancel()
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("switch to %s after a lost switch to %s: %v (followed: %q)", next[1], next[0], err, res.Open)
		}
		t.Logf("a lost switch to %s, then one to %s: %v, at %v (followed: %q)", next[0], next[1], time.Since(start).Round(time.Millisecond),
			res.Record, res.Open)
		if res.Record.Mode != next[1] || res.Record.Phase != "stable" {
			t.Errorf("the switch to %s ended at %v", next[1], res.Record)
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
	cmd := exec.Command(shoalBin, "cache", "switch", "far", "--addr", rc.c.Nodes()[0].HTTP, "--user", "admin")
	cmd.Env = append(os.Environ(), "SHOAL_PASSWORD="+restAdminPW)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "status 400") || !strings.Contains(string(out), "far") {
		t.Errorf("shoal cache switch far: %v\n%s", err, out)
	}
}
