package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const panicChildEnv = "SHOAL_TEST_PANIC_LOG"

// panicChild logs through a node log at path until it has rotated twice,
// then panics: run in a child process by TestNodeLogCatchesAPanic.
func panicChild(path string) {
	l, err := openNodeLog(path, 1<<10, 2)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	log := newLogger(l, "json", slog.LevelInfo)
	for i := 0; i < 60; i++ {
		log.Info("filler", "i", i, "pad", strings.Repeat("p", 40))
	}
	panic("boom from the test")
}

// A panic, written by the runtime and not through the logger, lands in
// the log file that is current when it happens, after rotations; the
// rotated files hold whole JSON lines.
func TestNodeLogCatchesAPanic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.log")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), panicChildEnv+"="+path)
	stderr, err := os.Create(filepath.Join(dir, "stderr")) // not the log file
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("the child did not fail")
	}
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(cur), "panic: boom from the test") {
		t.Fatalf("the current log lacks the panic:\n%s", cur)
	}
	for _, p := range []string{path + ".1", path + ".2"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("no rotated file: %v", err)
		}
		for _, ln := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(ln), &m); err != nil || m["msg"] != "filler" {
				t.Fatalf("%s: line %q is not a whole JSON log line: %v", p, ln, err)
			}
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Fatalf("%s.3 exists with --log-max-backups 2 (%v)", path, err)
	}
}

// 'shoal node --log-file' writes its log there in JSON, rotated by size,
// and nothing to standard error; a bad --log-format is refused.
func TestNodeLogFileFlags(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command(shoalBin, "node", "--log-format", "xml").CombinedOutput(); err == nil || !strings.Contains(string(out), "--log-format") {
		t.Fatalf("--log-format xml: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "logs", "node.log")
	cmd := exec.Command(shoalBin, "node", "--name", "logger", "--data-dir", filepath.Join(dir, "logger"),
		"--bind", "127.0.0.132:0", "--http", "127.0.0.132:0", "--join", "127.0.0.132:1", "--db", filepath.Join(dir, "shoal.db"),
		"--log-level", "debug", "--log-file", logPath, "--log-format", "json", "--log-max-size", "1KiB", "--log-max-backups", "2")
	errPath := filepath.Join(dir, "stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stdout, cmd.Stderr = errFile, errFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for { // the join's retries log until both backups exist
		if _, err := os.Stat(logPath + ".2"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			b, _ := os.ReadFile(logPath)
			t.Fatalf("the log never rotated twice:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatal("SIGTERM did not stop the node")
	}
	for _, p := range []string{logPath, logPath + ".1", logPath + ".2"} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		lines := 0
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m["node"] != "logger" {
				t.Fatalf("%s: %q is not a JSON log line of the node: %v", p, sc.Text(), err)
			}
			lines++
		}
		f.Close()
		if st.Size() > 1<<10 && lines > 1 {
			t.Errorf("%s: %d bytes in %d lines, past --log-max-size 1KiB", p, st.Size(), lines)
		}
	}
	if _, err := os.Stat(logPath + ".3"); !os.IsNotExist(err) {
		t.Errorf("a third backup with --log-max-backups 2 (%v)", err)
	}
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), `"msg":"stopped"`) {
		t.Errorf("the current log does not end with the node stopping:\n%s", b)
	}
	if b, _ := os.ReadFile(errPath); len(b) > 0 {
		t.Errorf("the node wrote to standard error with --log-file:\n%s", b)
	}
}
