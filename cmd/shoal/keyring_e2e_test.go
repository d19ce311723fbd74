package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// metricSum adds the samples of a metric on a node's /metrics whose
// labels contain every one of labels ("reason=\"x\""); -1 if unreadable.
func metricSum(client *http.Client, base, name string, labels ...string) float64 {
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// A 3-node cluster of real processes with a gossip key: a 'shoal node
// --join' without the key cannot join (and is counted as refused); the
// key rotates with 'shoal keyring' (install through one node, use through
// another, remove through the third) under writes, with no member seen
// failed by any node and the writes going on; a node restarted after the
// rotation comes back with its saved keyring although it is given the old
// key; a node with the old key alone cannot join.
func TestGossipKeyringE2E(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(shoalBin, "seed", "--data-dir", dir, "--admin-password", restAdminPW,
		"--users", "2", "--projects", "1", "--repos-per-project", "1", "--prs-per-repo", "2", "--comments-per-pr", "1").CombinedOutput()
	if err != nil {
		t.Fatalf("shoal seed: %v\n%s", err, out)
	}
	oldKey, _ := cluster.GenerateGossipKey()
	newKey, _ := cluster.GenerateGossipKey()
	oldB64, newB64 := cluster.EncodeGossipKey(oldKey), cluster.EncodeGossipKey(newKey)
	rc := &restCluster{t: t, dir: dir, client: noRedirectClient()}
	t.Cleanup(rc.client.CloseIdleConnections)
	rc.c = startCluster(t, localcluster.Options{
		Dir: dir, N: 3, Preset: "loopback", BootstrapExpect: 3, GossipKey: oldB64,
		IP: func(i int) string { return fmt.Sprintf("127.0.0.%d", 160+i) },
	})
	for i := 1; i <= 3; i++ {
		rc.waitReady(i, true, 60*time.Second)
		if st, err := os.Stat(filepath.Join(dir, fmt.Sprintf("node%d", i), "gossip.keyring")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("node%d's keyring file: %v %v", i, st, err)
		}
	}

	// An outsider without the key.
	intruder := func(name string, env ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, shoalBin, "node", "--name", name, "--bind", "127.0.0.165:0", "--http", "127.0.0.165:0",
			"--raft", "127.0.0.165:0", "--data-dir", filepath.Join(t.TempDir(), name), "--db", filepath.Join(dir, "shoal.db"),
			"--join", rc.c.Nodes()[0].Gossip, "--join-timeout", "4s")
		cmd.Env = append(os.Environ(), env...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if out, err := intruder("intruder"); err == nil || !strings.Contains(out, "join") {
		t.Fatalf("a node without the gossip key: %v\n%s", err, out)
	}
	if got := metricSum(rc.client, rc.node(1), "shoal_peer_refused_total", `listener="gossip"`, `reason="not_encrypted"`); got < 1 {
		t.Fatalf("node1 counted %v refusals of plaintext gossip", got)
	}
	var v struct {
		Members []struct{ Name, State string }
	}
	rc.get(1, "/v1/cluster", &v)
	if len(v.Members) != 3 {
		t.Fatalf("node1 has %d members after the intruder: %+v", len(v.Members), v.Members)
	}

	// The rotation, under writes.
	acks := &ackLog{acks: map[string]time.Time{}}
	stop := make(chan struct{})
	wg := writeLoad(rc, newAddrs(rc), "rot", 3, acks, stop)
	waitUntil(t, 60*time.Second, "50 acknowledged writes", func() bool { return len(acks.before(time.Now())) >= 50 })
	keyring := func(node int, args ...string) string {
		t.Helper()
		out, err := shoalCLI(t, append([]string{"keyring"}, append(args, "--addr", rc.c.Nodes()[node-1].HTTP, "--user", "admin")...)...)
		if err != nil {
			t.Fatalf("shoal keyring %v: %v\n%s", args, err, out)
		}
		t.Logf("shoal keyring %s via node%d:\n%s", args[0], node, out)
		return out
	}
	before := len(acks.before(time.Now()))
	// Between steps, writes go on and gossip runs a few probe rounds
	// (500 ms each) under the new state.
	settle := func() {
		n := len(acks.before(time.Now()))
		waitUntil(t, 60*time.Second, "writes between steps", func() bool { return len(acks.before(time.Now())) >= n+20 })
		time.Sleep(2 * time.Second)
	}
	keyring(1, "install", newB64)
	settle()
	keyring(2, "use", newB64)
	settle()
	keyring(3, "remove", oldB64)
	settle()
	list := keyring(1, "list")
	if !regexp.MustCompile(regexp.QuoteMeta(newB64)+`\s+3/3\s+3/3`).MatchString(list) || strings.Contains(list, oldB64) {
		t.Fatalf("keyring list after the rotation:\n%s", list)
	}
	// Writes go on under the new key.
	mid := len(acks.before(time.Now()))
	waitUntil(t, 60*time.Second, "writes after the rotation", func() bool { return len(acks.before(time.Now())) >= mid+30 })
	close(stop)
	wg.Wait()
	t.Logf("%d writes acknowledged during the rotation, %d in all", mid-before, len(acks.before(time.Now())))
	for i := 1; i <= 3; i++ {
		if got := metricSum(rc.client, rc.node(i), "shoal_cluster_member_failures_total"); got != 0 {
			t.Fatalf("node%d saw %v member failures", i, got)
		}
		if got := metricSum(rc.client, rc.node(i), "shoal_gossip_keys"); got != 1 {
			t.Fatalf("node%d holds %v gossip keys, want 1", i, got)
		}
	}

	// A restart: the node is given the old key (localcluster passes it)
	// but its saved keyring wins.
	rc.c.StopNode(2, 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := rc.c.Restart(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	if err := rc.c.WaitAlive(ctx, 3); err != nil {
		t.Fatal(err)
	}
	// The old key alone no longer gets in.
	if out, err := intruder("stale", "SHOAL_GOSSIP_KEY="+oldB64); err == nil || !strings.Contains(out, "join") {
		t.Fatalf("a node with the removed key: %v\n%s", err, out)
	}
	if got := metricSum(rc.client, rc.node(1), "shoal_peer_refused_total", `listener="gossip"`, `reason="unknown_key"`); got < 1 {
		t.Fatalf("node1 counted %v refusals of gossip under an unknown key", got)
	}
}

// After a gossip key rotation on a running 'shoal up' cluster, the nodes
// 'shoal up' starts again come back: one killed and restarted by the
// supervisor, one by 'shoal up restart NAME' (which logs that its saved
// keyring is read); <data-dir>/gossip.key follows the rotation, so a node
// added afterwards with that key (and a certificate of the cluster's CA)
// joins. Before, gossip.key kept the removed key and a new node could not
// join.
func TestUpRestartAndJoinAfterKeyRotation(t *testing.T) {
	dir := t.TempDir()
	_, out := startUpLines(t, dir)
	waitUntil(t, 120*time.Second, "3 alive nodes", func() bool { return allAlive(dir) })
	keyFile := filepath.Join(dir, gossipKeyFile)
	readKey := func() string {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	oldB64 := readKey()
	k, _ := cluster.GenerateGossipKey()
	newB64 := cluster.EncodeGossipKey(k)
	for _, step := range [][]string{{"install", newB64}, {"use", newB64}, {"remove", oldB64}} {
		out, err := shoalCLI(t, "keyring", step[0], step[1], "--data-dir", dir)
		if err != nil {
			t.Fatalf("shoal keyring %s: %v\n%s", step[0], err, out)
		}
	}
	if out, err := shoalCLI(t, "keyring", "list", "--data-dir", dir); err != nil || strings.Contains(out, oldB64) || !strings.Contains(out, newB64) {
		t.Fatalf("shoal keyring list after the rotation: %v\n%s", err, out)
	}

	// The supervisor's restart of a killed node.
	kids := childPIDs(t, dir)
	if err := syscall.Kill(kids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out.waitLine(t, "node2 is running again", 120*time.Second)
	waitUntil(t, 90*time.Second, "3 alive nodes after node2's restart", func() bool { return allAlive(dir) })
	// 'shoal up restart NAME'.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := exec.CommandContext(ctx, shoalBin, "up", "restart", "node3", "--data-dir", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(got), "ok: node3 is running again") {
		t.Fatalf("shoal up restart node3: %v\n%s", err, got)
	}
	waitUntil(t, 90*time.Second, "3 alive nodes after node3's restart", func() bool { return allAlive(dir) })
	for _, n := range []string{"node2", "node3"} {
		logb, _ := os.ReadFile(filepath.Join(dir, n, "node.log"))
		if !strings.Contains(string(logb), "gossip keyring read from the data directory; the gossip key given is its primary key") {
			t.Fatalf("%s's log does not say that it read its keyring with the key in use:\n%s", n, grepLines(logb, "keyring"))
		}
	}
	if got := readKey(); got != newB64 {
		t.Fatalf("%s holds %s after the rotation and restarts, want the new key %s", keyFile, got, newB64)
	}

	// A node added with gossip.key and a certificate of the CA joins.
	tlsDir := filepath.Join(dir, "tls")
	if out, err := shoalCLI(t, "tls", "issue", "node9", "--dir", tlsDir); err != nil {
		t.Fatalf("shoal tls issue: %v\n%s", err, out)
	}
	var cf clusterFile
	if err := readJSONFile(filepath.Join(dir, "cluster.json"), &cf); err != nil {
		t.Fatal(err)
	}
	nodeDir := t.TempDir()
	logPath := filepath.Join(nodeDir, "node.log")
	cmd := exec.Command(shoalBin, "node", "--name", "node9", "--data-dir", filepath.Join(nodeDir, "data"),
		"--bind", "127.0.0.1:0", "--rpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--raft", "127.0.0.1:0",
		"--db", filepath.Join(dir, "shoal.db"), "--join", cf.Nodes[0].Gossip, "--log-file", logPath,
		"--tls-ca", filepath.Join(tlsDir, "ca.pem"), "--tls-cert", filepath.Join(tlsDir, "node9.pem"),
		"--tls-key", filepath.Join(tlsDir, "node9-key.pem"))
	cmd.Env = append(os.Environ(), "SHOAL_GOSSIP_KEY="+readKey())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	tok, _ := localcluster.ReadAdminToken(dir)
	waitUntil(t, 120*time.Second, "node1 to see node9 alive", func() bool {
		select {
		case <-exited:
			logb, _ := os.ReadFile(logPath)
			t.Fatalf("node9 exited: %v\n%s", exitErr, logb)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v, err := localcluster.FetchView(ctx, cf.Nodes[0].HTTP, tok)
		if err != nil {
			return false
		}
		for _, m := range v.Members {
			if m.Name == "node9" && m.State == "alive" {
				return true
			}
		}
		return false
	})
}
