package localcluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeNode writes a program that logs lines, panics as a Go program does
// (the panic line, then a long stack) and exits 2.
func fakeNode(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake-shoal")
	script := `#!/bin/sh
i=0
while [ $i -lt 30 ]; do echo "level=INFO msg=\"starting $i\""; i=$((i+1)); done
echo "panic: sealed segment has no index block" >&2
echo "" >&2
echo "goroutine 1 [running]:" >&2
i=0
while [ $i -lt 40 ]; do echo "github.com/example/f$i()" >&2; echo "	/src/f.go:$i +0x1" >&2; i=$((i+1)); done
exit 2
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// A node that panics at start-up: the error shows its exit status and
// its panic line, and none of the lines an earlier run left in the same
// log file.
func TestStartFailureShowsPanicAndOnlyOwnLines(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "node1"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := "level=ERROR msg=\"earlier run\" err=\"listen tcp 127.0.0.1:7946: bind: address already in use\"\n"
	if err := os.WriteFile(filepath.Join(dir, "node1", "node.log"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Start(ctx, Options{Binary: fakeNode(t), N: 1, Dir: dir})
	if err == nil {
		t.Fatal("a node that panics started")
	}
	msg := err.Error()
	for _, want := range []string{"node1 exited before it was ready", "exit status 2", "panic: sealed segment has no index block", "goroutine 1 [running]:", "starting 29", "more lines"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	for _, unwanted := range []string{"earlier run", "already in use", "starting 0\""} {
		if strings.Contains(msg, unwanted) {
			t.Errorf("the error says %q:\n%s", unwanted, msg)
		}
	}
}

func TestExcerptAndCause(t *testing.T) {
	lines := []string{"a", "b", "c", "d", "e"}
	if got := Excerpt(lines, 3); strings.Join(got, ",") != "c,d,e" {
		t.Errorf("Excerpt without a panic: %q", got)
	}
	for _, c := range []struct{ line, want string }{
		{`level=ERROR msg="start" err="cluster: memberlist: Failed to start TCP listener on \"127.0.0.1\" port 7946: listen tcp 127.0.0.1:7946: bind: address already in use"`,
			"address 127.0.0.1:7946 is already in use"},
		{`shoal: listen udp 127.0.0.2:9000: bind: address already in use`, "address 127.0.0.2:9000 is already in use"},
		{`shoal: data directory in use: d/node1 is held by process 4242 (lock file d/node1/LOCK); stop that process or use another directory`,
			"its data directory d/node1 is locked by process 4242"},
		{`shoal: something else`, ""},
	} {
		got := Cause([]string{"x", c.line})
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("Cause(%q) = %q, want %q", c.line, got, c.want)
		}
	}
}
