package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/localcluster"
)

// shoalBin is the shoal binary built once for the multi-process tests.
var shoalBin string

func TestMain(m *testing.M) {
	if path := os.Getenv(panicChildEnv); path != "" {
		panicChild(path) // a child of TestNodeLogCatchesAPanic
	}
	dir, err := os.MkdirTemp("", "shoal-e2e-")
	if err != nil {
		panic(err)
	}
	shoalBin = filepath.Join(dir, "shoal")
	out, err := exec.Command("go", "build", "-o", shoalBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building shoal: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startCluster(t *testing.T, opts localcluster.Options) *localcluster.Cluster {
	t.Helper()
	opts.Binary = shoalBin
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(10 * time.Second) })
	return c
}

// Three real processes on 127.0.0.11-13: SIGKILL one and the others mark
// it failed within the loopback preset's detection time; it comes back
// with the same name and is alive again.
func TestMultiProcessKillIsDetected(t *testing.T) {
	c := startCluster(t, localcluster.Options{
		N: 3, Preset: "loopback", LogLevel: "debug",
		IP: func(i int) string { return fmt.Sprintf("127.0.0.%d", 10+i) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, p := range c.Nodes() {
		if !strings.HasPrefix(p.Gossip, fmt.Sprintf("127.0.0.%d:", 11+i)) {
			t.Fatalf("%s gossips on %s", p.Name, p.Gossip)
		}
	}
	start := time.Now()
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 3} {
		p := c.Nodes()[i-1]
		for {
			v, err := localcluster.FetchView(ctx, p.HTTP, c.Token())
			if err != nil {
				t.Fatal(err)
			}
			if localcluster.StateOf(v, "node2") == "failed" {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s never marked node2 failed", p.Name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("node2 marked failed by both others %v after SIGKILL", time.Since(start))
	if _, err := c.Restart(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAlive(ctx, 3); err != nil {
		t.Fatal(err)
	}
}

// 'shoal up' forms a cluster, 'shoal status' lists 3 alive members from
// each node, and SIGTERM to 'shoal up' stops every child gracefully.
func TestUpStatusAndStop(t *testing.T) {
	dir := t.TempDir()
	up, out := startUp(t, dir)
	waitForLine(t, out, "cluster of 3 nodes is up")
	status, err := exec.Command(shoalBin, "status", "--data-dir", dir, "--all").CombinedOutput()
	if err != nil {
		t.Fatalf("shoal status: %v\n%s", err, status)
	}
	if got := strings.Count(string(status), " alive "); got != 9 {
		t.Fatalf("status shows %d alive rows, want 3 from each of 3 nodes:\n%s", got, status)
	}
	// A secured cluster with no extra step: the gossip key is made, 0600,
	// and every node encrypts with it.
	if st, err := os.Stat(filepath.Join(dir, gossipKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", gossipKeyFile, st, err)
	}
	var cf clusterFile
	if err := readJSONFile(filepath.Join(dir, "cluster.json"), &cf); err != nil {
		t.Fatal(err)
	}
	for _, p := range cf.Nodes {
		if got := metricSum(http.DefaultClient, "http://"+p.HTTP, "shoal_gossip_keys"); got != 1 {
			t.Fatalf("%s holds %v gossip keys, want 1", p.Name, got)
		}
	}
	kids := childPIDs(t, dir)
	if err := up.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := up.Wait(); err != nil {
		t.Fatalf("shoal up exited with %v", err)
	}
	for _, pid := range kids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("child %d outlived shoal up", pid)
		}
	}
	for i := 1; i <= 3; i++ {
		log, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("node%d", i), "node.log"))
		if !strings.Contains(string(log), "msg=stopped") {
			t.Errorf("node%d did not stop gracefully:\n%s", i, log)
		}
	}
}

// SIGKILL to 'shoal up' leaves no orphans: the children notice their
// parent is gone and stop.
func TestUpKilledLeavesNoOrphans(t *testing.T) {
	dir := t.TempDir()
	up, out := startUp(t, dir)
	waitForLine(t, out, "cluster of 3 nodes is up")
	kids := childPIDs(t, dir)
	up.Process.Kill()
	up.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range kids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("child %d still running after its parent was killed", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func startUp(t *testing.T, dir string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(shoalBin, "up", "-n", "3", "--data-dir", dir, "--base-port", "0", "--http-base", "0", "--resp-base", "0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewScanner(stdout)
}

func waitForLine(t *testing.T, sc *bufio.Scanner, want string) {
	t.Helper()
	found := make(chan bool, 1)
	go func() {
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				found <- true
				// Keep draining so the child never blocks on a full pipe.
				for sc.Scan() {
				}
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("output ended without %q", want)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no %q within 60 s", want)
	}
}

func childPIDs(t *testing.T, dir string) []int {
	t.Helper()
	var cf clusterFile
	if err := readJSONFile(filepath.Join(dir, "cluster.json"), &cf); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, n := range cf.Nodes {
		pids = append(pids, n.PID)
	}
	if len(pids) != 3 {
		t.Fatalf("cluster.json lists %d nodes", len(pids))
	}
	return pids
}

// httpDo sends a request with an access token ("" for none).
func httpDo(token, method, url string, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func raftLeader(t *testing.T, c *localcluster.Cluster) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, p := range c.Nodes() {
			v, err := localcluster.FetchView(context.Background(), p.HTTP, c.Token())
			if err == nil && v.Raft.Leader == p.Name && v.Raft.Role == "leader" {
				return i + 1
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no raft leader")
	return 0
}

// Writes stream through a follower while the leader is SIGKILLed: a new
// leader takes over, no acknowledged write is lost, and the killed node,
// restarted from its data directory, catches up.
func TestMultiProcessLeaderKill(t *testing.T) {
	c := startCluster(t, localcluster.Options{
		N: 3, Preset: "loopback", BootstrapExpect: 3,
		IP: func(i int) string { return fmt.Sprintf("127.0.0.%d", 20+i) },
	})
	leader := raftLeader(t, c)
	via := c.Nodes()[leader%3] // a follower that stays up
	var acked []string
	write := func(i int) bool {
		key := fmt.Sprintf("w/%05d", i)
		code, _, err := httpDo(c.Token(), http.MethodPut, "http://"+via.HTTP+"/v1/kv/"+key, "v")
		if err == nil && code == http.StatusOK {
			acked = append(acked, key)
			return true
		}
		return false
	}
	for i := 0; i < 50; i++ {
		if !write(i) {
			t.Fatalf("write %d failed before any fault", i)
		}
	}
	killed := time.Now()
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	var failover time.Duration
	for i := 50; len(acked) < 100; i++ {
		if write(i) && failover == 0 {
			failover = time.Since(killed)
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("only %d writes acknowledged 30 s after the leader died", len(acked))
		}
	}
	t.Logf("first acknowledged write %v after SIGKILL of the leader", failover)
	code, body, err := httpDo(c.Token(), http.MethodGet, "http://"+via.HTTP+"/v1/kv?prefix=w/", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("list: %d %v", code, err)
	}
	var list []struct{ Key string }
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, kv := range list {
		have[kv.Key] = true
	}
	for _, k := range acked {
		if !have[k] {
			t.Fatalf("acknowledged write %s is lost", k)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	back, err := c.Restart(ctx, leader, leader%3+1)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := httpDo(c.Token(), http.MethodGet, "http://"+back.HTTP+"/v1/kv?prefix=w/&stale", "")
		if err == nil && code == http.StatusOK {
			var l []struct{ Key string }
			if json.Unmarshal(body, &l) == nil && len(l) >= len(acked) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted node did not catch up: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
