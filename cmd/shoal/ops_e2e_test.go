package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/localcluster"
)

// shoalCLI runs the shoal binary as the seeded administrator and returns
// its combined output.
func shoalCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, shoalBin, args...)
	cmd.Env = append(os.Environ(), "SHOAL_PASSWORD="+restAdminPW)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kvPut writes a key through node i as the administrator; ok means 200.
func (rc *restCluster) kvPut(i int, key, value string) bool {
	return kvPutAt(rc.client, rc.node(i), key, value)
}

func kvPutAt(client *http.Client, base, key, value string) bool {
	code, _, err := sendWith(client, base, restReq{method: http.MethodPut, path: "/v1/kv/" + key, body: []byte(value), user: "admin", pw: restAdminPW})
	return err == nil && code == http.StatusOK
}

// addrs are the nodes' base URLs as the writers see them: a restarted
// node's new address is set once it is ready, under the lock (reading a
// Proc that localcluster is still filling in would race).
type addrs struct {
	mu   sync.Mutex
	base []string
}

func newAddrs(rc *restCluster) *addrs {
	a := &addrs{}
	for i := range rc.c.Nodes() {
		a.base = append(a.base, rc.node(i+1))
	}
	return a
}

func (a *addrs) get(i int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.base[i-1]
}

func (a *addrs) set(i int, httpAddr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.base[i-1] = "http://" + httpAddr
}

// kvList lists a prefix through node i (stale: its own replica).
func (rc *restCluster) kvList(i int, prefix string, stale bool) (map[string]string, error) {
	path := "/v1/kv?prefix=" + prefix
	if stale {
		path += "&stale"
	}
	code, b, err := rc.send(i, restReq{method: http.MethodGet, path: path, user: "admin", pw: restAdminPW})
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("list %s on node%d: %d %v %s", prefix, i, code, err, b)
	}
	var list []struct{ Key, Value string }
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range list {
		out[kv.Key] = kv.Value
	}
	return out, nil
}

// ackLog records acknowledged writes and when they were acknowledged.
type ackLog struct {
	mu   sync.Mutex
	acks map[string]time.Time // key -> acknowledgement time
}

func (a *ackLog) add(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acks[key] = time.Now()
}

// before returns the keys acknowledged before t.
func (a *ackLog) before(t time.Time) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for k, at := range a.acks {
		if at.Before(t) {
			out = append(out, k)
		}
	}
	return out
}

// writeLoad writes keys prefix/w<n>/<i> (value = key) through the nodes
// in turn, one writer per node, until stop is closed.
func writeLoad(rc *restCluster, at *addrs, prefix string, nodes int, acks *ackLog, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := 1; w <= nodes; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("%s/w%d/%06d", prefix, w, i)
				if kvPutAt(rc.client, at.get(w), key, key) {
					acks.add(key)
				}
			}
		}()
	}
	return &wg
}

// TestSnapshotSaveRestoreUnderWrites: 'shoal snapshot save' on a 3-node
// cluster under writes, 'shoal snapshot restore' onto a fresh 3-node
// cluster: every key acknowledged before the save began is there, on
// every node, and writes after the restore get versions past the
// restored ones.
func TestSnapshotSaveRestoreUnderWrites(t *testing.T) {
	src := startRESTCluster(t, 3, 70)
	acks := &ackLog{acks: map[string]time.Time{}}
	stop := make(chan struct{})
	wg := writeLoad(src, newAddrs(src), "snap", 3, acks, stop)
	waitUntil(t, 30*time.Second, "200 acknowledged writes", func() bool { return len(acks.before(time.Now())) >= 200 })
	file := filepath.Join(t.TempDir(), "backup.snap")
	saveStart := time.Now()
	// Through a node that may be a follower: it redirects to the leader.
	out, err := shoalCLI(t, "snapshot", "save", "--addr", src.c.Nodes()[2].HTTP, "--user", "admin", file)
	if err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	t.Logf("snapshot save: %s", strings.TrimSpace(out))
	time.Sleep(200 * time.Millisecond) // a few writes after the save, which may or may not be in it
	close(stop)
	wg.Wait()
	want := acks.before(saveStart)
	if len(want) < 200 {
		t.Fatalf("only %d writes acknowledged before the save", len(want))
	}
	if out, err := shoalCLI(t, "snapshot", "inspect", file); err != nil || !strings.Contains(out, "keys") {
		t.Fatalf("snapshot inspect: %v\n%s", err, out)
	}

	dst := startRESTCluster(t, 3, 80)
	if !dst.kvPut(1, "before-restore", "gone after it") {
		t.Fatal("a write to the fresh cluster failed")
	}
	out, err = shoalCLI(t, "snapshot", "restore", "--addr", dst.c.Nodes()[1].HTTP, "--user", "admin", file)
	if err != nil {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	t.Logf("snapshot restore: %s", strings.TrimSpace(out))
	for i := 1; i <= 3; i++ {
		var have map[string]string
		waitUntil(t, 30*time.Second, fmt.Sprintf("node%d to hold the restored keys", i), func() bool {
			have, err = dst.kvList(i, "snap/", true)
			return err == nil && len(have) >= len(want)
		})
		for _, k := range want {
			if have[k] != k {
				t.Fatalf("node%d: key %s, acknowledged before the save, is %q after the restore", i, k, have[k])
			}
		}
	}
	if got, _ := dst.kvList(1, "before-restore", false); len(got) != 0 {
		t.Fatalf("a key written before the restore survived it: %v", got)
	}
	checkVersionsMoveOn(t, dst)
	t.Logf("%d keys acknowledged before the save, all restored on 3 nodes", len(want))
}

// checkVersionsMoveOn: a write after a restore has a version greater than
// every restored version.
func checkVersionsMoveOn(t *testing.T, rc *restCluster) {
	t.Helper()
	code, b, err := rc.send(1, restReq{method: http.MethodGet, path: "/v1/kv?prefix=snap/", user: "admin", pw: restAdminPW})
	if err != nil || code != http.StatusOK {
		t.Fatalf("list: %d %v", code, err)
	}
	var list []struct{ Version uint64 }
	json.Unmarshal(b, &list)
	var maxV uint64
	for _, kv := range list {
		maxV = max(maxV, kv.Version)
	}
	code, b, err = rc.send(1, restReq{method: http.MethodPut, path: "/v1/kv/after-restore", body: []byte("x"), user: "admin", pw: restAdminPW})
	var put struct{ Version uint64 }
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &put) != nil || put.Version <= maxV {
		t.Fatalf("write after the restore: %d %v %s; want a version above %d", code, err, b, maxV)
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRaftPeersAndRemovePeer: 'shoal raft peers' lists the three voters;
// removing a live one is refused, and so is a caller who is not an
// administrator; a killed one is removed at once.
func TestRaftPeersAndRemovePeer(t *testing.T) {
	rc := startRESTCluster(t, 3, 90)
	addr := rc.c.Nodes()[0].HTTP
	out, err := shoalCLI(t, "raft", "peers", "--addr", addr, "--user", "admin")
	if err != nil || strings.Count(out, "voter") != 3 || !strings.Contains(out, "true") {
		t.Fatalf("raft peers: %v\n%s", err, out)
	}
	if out, err := shoalCLI(t, "raft", "remove-peer", "--addr", addr, "--user", "admin", "node3"); err == nil || !strings.Contains(out, "alive") {
		t.Fatalf("remove-peer of a live node: %v\n%s", err, out)
	}
	code, _, _ := rc.send(1, restReq{method: http.MethodGet, path: "/v1/raft/peers"})
	if code != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v1/raft/peers = %d, want 401", code)
	}
	leader := raftLeader(t, rc.c)
	victim := leader%3 + 1
	if err := rc.c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("node%d", victim)
	via := rc.c.Nodes()[leader-1].HTTP
	waitUntil(t, 30*time.Second, name+" marked failed", func() bool {
		v, err := localcluster.FetchView(context.Background(), via, rc.c.Token())
		return err == nil && localcluster.StateOf(v, name) == "failed"
	})
	if out, err := shoalCLI(t, "raft", "remove-peer", "--addr", via, "--user", "admin", name); err != nil {
		t.Fatalf("remove-peer %s: %v\n%s", name, err, out)
	}
	out, err = shoalCLI(t, "raft", "peers", "--addr", via, "--user", "admin", "--json")
	if err != nil || strings.Contains(out, `"`+name+`"`) {
		t.Fatalf("peers after removing %s: %v\n%s", name, err, out)
	}
}

// TestDataDirInUseAndDamagedLog: a second node on a data directory in
// use is refused at once naming the holder's PID; a node whose raft log
// is damaged exits non-zero with one line naming the log and the command
// that recovers it, and after that command it starts again.
func TestDataDirInUseAndDamagedLog(t *testing.T) {
	c := startCluster(t, localcluster.Options{N: 1, Preset: "loopback", BootstrapExpect: 1,
		IP: func(i int) string { return fmt.Sprintf("127.0.0.%d", 100+i) }})
	p := c.Nodes()[0]
	start := time.Now()
	out, err := exec.Command(shoalBin, "node", "--name", "node1", "--data-dir", p.DataDir, "--bind", "127.0.0.101:0",
		"--http", "127.0.0.101:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") || !strings.Contains(string(out), fmt.Sprintf("process %d", p.PID)) {
		t.Fatalf("second node on %s: %v\n%s", p.DataDir, err, out)
	}
	t.Logf("refused after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	for i := range 20 {
		if code, _, err := httpDo(c.Token(), http.MethodPut, fmt.Sprintf("http://%s/v1/kv/k%d", p.HTTP, i), "v"); err != nil || code != http.StatusOK {
			t.Fatalf("put: %d %v", code, err)
		}
	}
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(p.DataDir, "raft", "log", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no raft log segment")
	}
	b, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	b[40] ^= 0xff // inside the first record: data follows, so not a torn write
	if err := os.WriteFile(segs[len(segs)-1], b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Restart(ctx, 1, 0); err == nil {
		t.Fatal("a node with a damaged log started")
	}
	q := c.Nodes()[0]
	if q.ExitErr() == nil {
		t.Fatal("the node with a damaged log exited 0")
	}
	logText, _ := os.ReadFile(q.Log)
	last := lastLine(string(logText))
	for _, want := range []string{"damaged beyond repair", filepath.Join(p.DataDir, "raft", "log"), "shoal raft reset --data-dir " + p.DataDir} {
		if !strings.Contains(last, want) {
			t.Fatalf("the last line does not say %q:\n%s", want, last)
		}
	}
	if strings.Contains(string(logText), "panic") {
		t.Fatalf("the node panicked:\n%s", logText)
	}
	if out, err := shoalCLI(t, "raft", "reset", "--data-dir", p.DataDir); err != nil {
		t.Fatalf("raft reset: %v\n%s", err, out)
	}
	if _, err := c.Restart(ctx, 1, 0); err != nil {
		t.Fatalf("restart after raft reset: %v\n%s", err, localcluster.Tail(c.Nodes()[0].Log, 20))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// crashes is how many times TestKillDuringWrites SIGKILLs a node: 50 in
// the long profile (SHOAL_LONG=1, make test-long), a few otherwise.
func crashes() int {
	if os.Getenv("SHOAL_LONG") != "" {
		return 50
	}
	return 5
}

// TestKillDuringWrites SIGKILLs a node at random moments of a write load
// and restarts it, crashes() times: a lone node (whose log is all there
// is: every write it acknowledged must come back from its own disk), and
// a node of three picked at random, the leader included (so that a killed
// leader's unreplicated entries are cleared as a suffix when it rejoins).
// Every restart must succeed with every acknowledged write present.
func TestKillDuringWrites(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d-nodes", n), func(t *testing.T) { killDuringWrites(t, n, 110+10*n) })
	}
}

func killDuringWrites(t *testing.T, n, ipBase int) {
	// A killed node comes back at its addresses, as under 'shoal up' or a
	// service manager. Restarted at new gossip and RPC ports instead, a
	// node that joined through a peer killed a moment later knew no live
	// member, and none knew where it now was: it stayed alone in its
	// gossip, and the leader removed it from raft (1 of 15 runs).
	rc := startRESTClusterWith(t, n, ipBase, func(o *localcluster.Options) { o.KeepAddrs = true })
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	acks := &ackLog{acks: map[string]time.Time{}}
	stop := make(chan struct{})
	at := newAddrs(rc)
	wg := writeLoad(rc, at, "crash", n, acks, stop)
	defer func() { close(stop); wg.Wait() }()
	for round := range crashes() {
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		victim := 1 + rng.IntN(n)
		killedAt := time.Now()
		if err := rc.c.Kill(victim); err != nil {
			t.Fatal(err)
		}
		want := acks.before(killedAt)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		join := 0 // a lone node joins nobody
		if n > 1 {
			join = victim%n + 1
		}
		p, err := rc.c.Restart(ctx, victim, join)
		cancel()
		if err != nil {
			t.Fatalf("round %d: restart of node%d failed: %v\n%s", round, victim, err, localcluster.Tail(rc.c.Nodes()[victim-1].Log, 30))
		}
		// The restarted node's own replica, once it has caught up, holds
		// every write acknowledged before it died.
		at.set(victim, p.HTTP)
		deadline := time.Now().Add(60 * time.Second)
		for {
			have, err := rc.kvList(victim, "crash/", true)
			if err == nil && containsKeys(have, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: node%d holds %d of the %d writes acknowledged before it was killed (%v); missing %v\n%s\n%s",
					round, victim, len(have), len(want), err, missing(have, want, 5), raftViews(rc), problems(p.Log, 40))
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("round %d: node%d (pid %d) killed and back with all %d acknowledged writes", round, victim, p.PID, len(want))
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	wg = &sync.WaitGroup{}
	all := acks.before(time.Now())
	// A linearizable list, through the leader: on a loaded machine the
	// group may be between leaders for a while.
	deadline := time.Now().Add(60 * time.Second)
	for {
		have, err := rc.kvList(1, "crash/", false)
		if err == nil && containsKeys(have, all) {
			break
		}
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("after %d kills: %d of %d acknowledged writes present (%v); missing %v\n%s%s",
				crashes(), len(have), len(all), err, missing(have, all, 5), raftViews(rc), raftLogs(rc, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	suffixes := 0
	for _, p := range rc.c.Nodes() {
		b, _ := os.ReadFile(p.Log)
		suffixes += bytes.Count(b, []byte("clearing log suffix"))
	}
	t.Logf("%d kills, %d acknowledged writes all present; raft cleared a log suffix %d times", crashes(), len(all), suffixes)
}

// missing returns up to n of keys that have lacks.
func missing(have map[string]string, keys []string, n int) []string {
	var out []string
	for _, k := range keys {
		if have[k] != k && len(out) < n {
			out = append(out, k)
		}
	}
	return out
}

// raftViews is each node's raft view, for a failure message.
func raftViews(rc *restCluster) string {
	var b strings.Builder
	for i, p := range rc.c.Nodes() {
		v, err := localcluster.FetchView(context.Background(), p.HTTP, rc.c.Token())
		if err != nil {
			fmt.Fprintf(&b, "node%d: %v\n", i+1, err)
			continue
		}
		fmt.Fprintf(&b, "node%d: %+v members:", i+1, v.Raft)
		for _, m := range v.Members {
			fmt.Fprintf(&b, " %s=%s/%s", m.Name, m.State, m.RaftRole)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// raftLogs is the last n lines of each node's log that speak of raft or
// of the consistent store, for a failure message.
func raftLogs(rc *restCluster, n int) string {
	var b strings.Builder
	for i, p := range rc.c.Nodes() {
		data, _ := os.ReadFile(p.Log)
		var lines []string
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "raft") || strings.Contains(l, "cp:") {
				lines = append(lines, l)
			}
		}
		fmt.Fprintf(&b, "--- node%d (%s)\n%s\n", i+1, p.Log, strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return b.String()
}

// problems returns the last n WARN and ERROR lines of a node's log.
func problems(path string, n int) string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") || strings.Contains(l, "panic") {
			out = append(out, l)
		}
	}
	return strings.Join(out[max(0, len(out)-n):], "\n")
}

func containsKeys(have map[string]string, keys []string) bool {
	for _, k := range keys {
		if have[k] != k {
			return false
		}
	}
	return true
}

// TestStartupWaitAnswersSIGTERM: a node still waiting at start-up (here
// for a seed that never answers) stops at once on SIGTERM.
func TestStartupWaitAnswersSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(shoalBin, "node", "--name", "lonely", "--data-dir", filepath.Join(dir, "lonely"),
		"--bind", "127.0.0.131:0", "--http", "127.0.0.131:0", "--join", "127.0.0.131:1", "--db", filepath.Join(dir, "shoal.db"))
	logPath := filepath.Join(dir, "node.log")
	logFile, err := os.Create(logPath) // a file: the child writes it, no copying goroutine
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	output := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(output(), "node started") { // now in the join's retries
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("the node never started:\n%s", output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("SIGTERM did not stop a node waiting to join:\n%s", output())
	}
}

// TestRestartRetriesWhenItsRaftPortIsTaken: a restarted node reuses its
// raft port; when that port is taken at the start (here by the test, as
// the node's own port-0 HTTP listener can take it), the start is tried
// again, and succeeds once the port is free.
func TestRestartRetriesWhenItsRaftPortIsTaken(t *testing.T) {
	c := startCluster(t, localcluster.Options{N: 1, Preset: "loopback", BootstrapExpect: 1,
		IP: func(i int) string { return fmt.Sprintf("127.0.0.%d", 240+i) }})
	p := c.Nodes()[0]
	logStart, _ := os.Stat(p.Log)
	raft := ""
	for _, l := range p.OwnLines() {
		if i := strings.Index(l, " raft="); i >= 0 && strings.Contains(l, "node started") {
			raft = strings.Fields(l[i+len(" raft="):])[0]
		}
	}
	if raft == "" {
		t.Fatalf("no raft address in %s", p.Log)
	}
	c.StopNode(1, 10*time.Second)
	ln, err := net.Listen("tcp", raft)
	if err != nil {
		t.Fatalf("taking %s: %v", raft, err)
	}
	defer ln.Close()
	// Free the port once a start has failed on it.
	stop := make(chan struct{})
	freed := make(chan struct{})
	defer func() { close(stop); <-freed }()
	go func() {
		defer close(freed)
		for {
			b, _ := os.ReadFile(p.Log)
			if int64(len(b)) > logStart.Size() && strings.Contains(string(b[logStart.Size():]), raft+": bind: address already in use") {
				ln.Close()
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	q, err := c.Restart(ctx, 1, 0)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	b, _ := os.ReadFile(q.Log)
	if !strings.Contains(string(b[logStart.Size():]), raft+": bind: address already in use") {
		t.Fatalf("the restart never met the taken port %s", raft)
	}
}
