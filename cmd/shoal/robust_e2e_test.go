package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/dirlock"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// errorLines returns the lines of a node's log at level ERROR.
func errorLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// A clean stop of a whole cluster (every node SIGTERMed at once, as
// 'shoal up' does on Ctrl-C) after some writes logs no ERROR line on any
// node: neither the transports' own closing nor the peers going away.
func TestCleanShutdownLogsNoError(t *testing.T) {
	for round := 1; round <= 2; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			rc := startRESTCluster(t, 3, 150+10*round)
			for i := range 20 {
				key := fmt.Sprintf("clean/%d", i)
				waitUntil(t, 30*time.Second, "PUT "+key, func() bool { return rc.kvPut(1+i%3, key, "v") })
			}
			rc.c.Stop(15 * time.Second)
			for _, p := range rc.c.Nodes() {
				if err := p.ExitErr(); err != nil {
					t.Errorf("%s exited with %v", p.Name, err)
				}
				if lines := errorLines(t, p.Log); len(lines) > 0 {
					t.Errorf("%s logged %d ERROR lines on a clean stop:\n%s", p.Name, len(lines), strings.Join(lines, "\n"))
				}
			}
		})
	}
}

// runUp runs 'shoal up' with args to its end (it must fail on its own
// within a minute) and returns its combined output.
func runUp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shoalBin, append([]string{"up"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("shoal up %v did not end:\n%s", args, out)
	}
	return string(out), err
}

// A second 'shoal up' on a directory where one runs is refused at once,
// naming the running one's PID; the running cluster's logs are untouched.
func TestUpRefusesSecondUpOnItsDirectory(t *testing.T) {
	dir := t.TempDir()
	up, out := startUp(t, dir)
	waitForLine(t, out, "cluster of 3 nodes is up")
	logBefore, _ := os.ReadFile(filepath.Join(dir, "node1", "node.log"))
	start := time.Now()
	got, err := runUp(t, "-n", "3", "--data-dir", dir, "--base-port", "0", "--http-base", "0", "--resp-base", "0")
	if err == nil {
		t.Fatalf("a second shoal up on %s succeeded:\n%s", dir, got)
	}
	for _, want := range []string{"another 'shoal up'", fmt.Sprintf("process %d", up.Process.Pid)} {
		if !strings.Contains(got, want) {
			t.Errorf("the second shoal up does not say %q:\n%s", want, got)
		}
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("refused after %v", d)
	}
	logAfter, _ := os.ReadFile(filepath.Join(dir, "node1", "node.log"))
	if !strings.HasPrefix(string(logAfter), string(logBefore)) || strings.Contains(string(logAfter[len(logBefore):]), "level=ERROR") {
		t.Errorf("the running node1's log changed:\n%s", logAfter[len(logBefore):])
	}
}

// A node that cannot bind its gossip port: 'shoal up' names the address.
func TestUpNamesAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if port+30 > 65535 {
		t.Skip("the OS picked a port too high for --base-port")
	}
	got, err := runUp(t, "-n", "1", "--data-dir", t.TempDir(), "--base-port", fmt.Sprint(port), "--http-base", "0", "--resp-base", "0")
	if err == nil {
		t.Fatalf("shoal up with its gossip port taken succeeded:\n%s", got)
	}
	if want := fmt.Sprintf("address 127.0.0.1:%d is already in use", port); !strings.Contains(got, want) {
		t.Errorf("shoal up does not say %q:\n%s", want, got)
	}
}

// A node whose data directory another process holds: 'shoal up' names
// the directory and the holder's PID.
func TestUpNamesLockedDataDir(t *testing.T) {
	dir := t.TempDir()
	nodeDir := filepath.Join(dir, "node1")
	other := exec.Command(shoalBin, "node", "--name", "node1", "--data-dir", nodeDir, "--bind", "127.0.0.1:0",
		"--http", "127.0.0.1:0", "--bootstrap-expect", "1", "--db", filepath.Join(t.TempDir(), "other.db"))
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		other.Process.Kill()
		other.Wait()
	})
	waitUntil(t, 60*time.Second, "the hand-started node holds "+nodeDir, func() bool { return dirlock.Holder(nodeDir) == other.Process.Pid })
	got, err := runUp(t, "-n", "1", "--data-dir", dir, "--base-port", "0", "--http-base", "0", "--resp-base", "0")
	if err == nil {
		t.Fatalf("shoal up on a locked node directory succeeded:\n%s", got)
	}
	if want := fmt.Sprintf("its data directory %s is locked by process %d", nodeDir, other.Process.Pid); !strings.Contains(got, want) {
		t.Errorf("shoal up does not say %q:\n%s", want, got)
	}
}

// lines collects a command's output lines for waitLine.
type lines struct {
	mu  sync.Mutex
	all []string
}

func collect(r io.Reader) *lines {
	l := &lines{}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *lines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// waitLine waits for a line containing want and returns it.
func (l *lines) waitLine(t *testing.T, want string, within time.Duration) string {
	t.Helper()
	var got string
	waitUntil(t, within, fmt.Sprintf("a line with %q", want), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range l.all {
			if strings.Contains(s, want) {
				got = s
				return true
			}
		}
		return false
	})
	return got
}

// startUpLines starts 'shoal up' of 3 nodes in dir and collects its
// standard output.
func startUpLines(t *testing.T, dir string) (*exec.Cmd, *lines) {
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
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	l := collect(stdout)
	l.waitLine(t, "cluster of 3 nodes is up", 90*time.Second)
	return cmd, l
}

// allAlive reports whether every node in cluster.json answers and sees
// 3 alive members.
func allAlive(dir string) bool {
	var cf clusterFile
	if readJSONFile(filepath.Join(dir, "cluster.json"), &cf) != nil || len(cf.Nodes) != 3 {
		return false
	}
	for _, n := range cf.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tok, _ := localcluster.ReadAdminToken(dir)
		v, err := localcluster.FetchView(ctx, n.HTTP, tok)
		cancel()
		if err != nil || localcluster.CountState(v, "alive") != 3 {
			return false
		}
	}
	return true
}

// 'shoal up' starts a SIGKILLed node again after a backoff and says so;
// 'shoal up restart NAME' restarts one on demand, gracefully; both come
// back at their addresses with their data, and cluster.json follows.
func TestUpRestartsNodes(t *testing.T) {
	dir := t.TempDir()
	up, out := startUpLines(t, dir)
	kids := childPIDs(t, dir)
	if err := syscall.Kill(kids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out.waitLine(t, "node2 exited (signal: killed); restarting in 1s (attempt 2)", 30*time.Second)
	back := out.waitLine(t, "node2 is running again", 90*time.Second)
	waitUntil(t, 60*time.Second, "3 alive nodes after the restart", func() bool { return allAlive(dir) })
	if now := childPIDs(t, dir); now[1] == kids[1] || now[0] != kids[0] || now[2] != kids[2] {
		t.Fatalf("cluster.json PIDs %v after restarting node2 (before %v; %s)", now, kids, back)
	}

	// On demand.
	before := childPIDs(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got, err := exec.CommandContext(ctx, shoalBin, "up", "restart", "node3", "--data-dir", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(got), "ok: node3 is running again") {
		t.Fatalf("shoal up restart node3: %v\n%s", err, got)
	}
	out.waitLine(t, "restarting node3 on request", 10*time.Second)
	if syscall.Kill(before[2], 0) == nil {
		t.Errorf("the old node3 (pid %d) still runs", before[2])
	}
	if now := childPIDs(t, dir); now[2] == before[2] {
		t.Errorf("node3's PID did not change: %v", now)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "node3", "node.log")); strings.Count(string(log), "msg=stopped") < 1 {
		t.Errorf("the old node3 did not stop gracefully:\n%s", log)
	}
	waitUntil(t, 60*time.Second, "3 alive nodes after restart node3", func() bool { return allAlive(dir) })
	if strings.Contains(out.text(), "node3 exited") {
		t.Errorf("an on-demand restart was reported as an unexpected exit:\n%s", out.text())
	}

	// Bad requests are refused with a reason.
	for _, name := range []string{"node9", "nope"} {
		got, err := exec.Command(shoalBin, "up", "restart", name, "--data-dir", dir).CombinedOutput()
		if err == nil || !strings.Contains(string(got), "want 'restart NAME'") {
			t.Errorf("shoal up restart %s: %v\n%s", name, err, got)
		}
	}
	if err := up.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := up.Wait(); err != nil {
		t.Fatalf("shoal up exited with %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, controlSocket)); !os.IsNotExist(err) {
		t.Errorf("the control socket outlived shoal up: %v", err)
	}
	got, err = exec.Command(shoalBin, "up", "restart", "node1", "--data-dir", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(got), "no 'shoal up' answers") {
		t.Errorf("shoal up restart without shoal up: %v\n%s", err, got)
	}
}

// A node started by hand with the flags 'shoal up' gave it runs: while
// the process --parent-pid names lives, and on its own if it is gone.
func TestNodeByHandWithParentPID(t *testing.T) {
	keeper := exec.Command("sleep", "300")
	if err := keeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keeper.Process.Kill(); keeper.Wait() })
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		parent int
	}{{"parent alive", keeper.Process.Pid}, {"parent gone", gone.Process.Pid}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ready := filepath.Join(dir, "ready.json")
			node := exec.Command(shoalBin, "node", "--name", "node1", "--data-dir", filepath.Join(dir, "node1"), "--bind", "127.0.0.1:0",
				"--http", "127.0.0.1:0", "--raft", "127.0.0.1:0", "--bootstrap-expect", "1", "--db", filepath.Join(dir, "shoal.db"),
				"--ready-file", ready, "--parent-pid", fmt.Sprint(c.parent))
			var log bytes.Buffer
			node.Stdout, node.Stderr = &log, &log
			if err := node.Start(); err != nil {
				t.Fatal(err)
			}
			done, exited := make(chan error, 1), make(chan struct{})
			go func() { done <- node.Wait(); close(exited) }()
			t.Cleanup(func() { node.Process.Kill(); <-exited })
			waitUntil(t, 60*time.Second, "the node's ready file", func() bool {
				_, err := os.Stat(ready)
				return err == nil
			})
			select {
			case err := <-done:
				t.Fatalf("the node exited: %v", err)
			case <-time.After(2 * time.Second):
			}
			if c.parent != keeper.Process.Pid {
				return
			}
			keeper.Process.Kill()
			keeper.Wait() // reaped: a zombie still answers signal 0
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("the node exited with %v after its --parent-pid process died", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the node still runs 30 s after its --parent-pid process died")
			}
		})
	}
}

// A push killed with its node leaves objects/tmp_objdir-incoming-* in the
// shared repositories: a node sweeps those older than an hour when it
// starts, and keeps a fresh one (a push that may be under way on another
// node).
func TestStartupSweepsStaleQuarantines(t *testing.T) {
	repos := t.TempDir()
	objects := filepath.Join(repos, "PROJ", "repo.git", "objects")
	stale, fresh := filepath.Join(objects, "tmp_objdir-incoming-stale1"), filepath.Join(objects, "tmp_objdir-incoming-fresh1")
	for _, d := range []string{stale, fresh} {
		if err := os.MkdirAll(filepath.Join(d, "pack"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "pack", "tmp_pack_x"), []byte("partial pack"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{filepath.Join(stale, "pack", "tmp_pack_x"), filepath.Join(stale, "pack"), stale} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	c := startCluster(t, localcluster.Options{N: 1, Preset: "loopback", BootstrapExpect: 1, Args: []string{"--repos-dir", repos}})
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale quarantine is still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("the fresh quarantine was removed: %v", err)
	}
	if log, _ := os.ReadFile(c.Nodes()[0].Log); !strings.Contains(string(log), "removed stale push quarantines") {
		t.Errorf("the node did not say it removed a quarantine:\n%s", log)
	}
}
