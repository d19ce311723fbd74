package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/dirlock"
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
	got, err := runUp(t, "-n", "3", "--data-dir", dir, "--base-port", "0", "--http-base", "0")
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
	got, err := runUp(t, "-n", "1", "--data-dir", t.TempDir(), "--base-port", fmt.Sprint(port), "--http-base", "0")
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
	got, err := runUp(t, "-n", "1", "--data-dir", dir, "--base-port", "0", "--http-base", "0")
	if err == nil {
		t.Fatalf("shoal up on a locked node directory succeeded:\n%s", got)
	}
	if want := fmt.Sprintf("its data directory %s is locked by process %d", nodeDir, other.Process.Pid); !strings.Contains(got, want) {
		t.Errorf("shoal up does not say %q:\n%s", want, got)
	}
}
