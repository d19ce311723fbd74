package cpupin

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, c := range []struct {
		cpus []int
		want string
	}{{nil, ""}, {[]int{0}, "0"}, {[]int{1, 2, 3}, "1-3"}, {[]int{0, 2}, "0,2"}, {[]int{0, 1, 3, 5, 6}, "0-1,3,5-6"}} {
		if got := String(c.cpus); got != c.want {
			t.Errorf("String(%v) = %q, want %q", c.cpus, got, c.want)
		}
	}
}

// TestHelperThreads is the child TestPinEveryThread pins: it starts
// several threads and waits for its standard input to close.
func TestHelperThreads(t *testing.T) {
	if os.Getenv("CPUPIN_HELPER") != "1" {
		t.Skip("the child of TestPinEveryThread")
	}
	up := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread() // each on a thread of its own, held
			up <- struct{}{}
			io.Copy(io.Discard, os.Stdin)
		}()
	}
	for range 4 {
		<-up
	}
	os.Stdout.WriteString("up\n")
	io.Copy(io.Discard, os.Stdin)
}

func TestPinEveryThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	cpus, err := Available()
	if err != nil || len(cpus) == 0 {
		t.Fatalf("Available: %v, %v", cpus, err)
	}
	if len(cpus) < 2 {
		t.Skip("one CPU: a pin to it changes nothing to check")
	}
	want := cpus[len(cpus)-1:]
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperThreads$")
	cmd.Env = append(os.Environ(), "CPUPIN_HELPER=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "up") {
		t.Fatalf("the child did not start its threads: %q, %v", line, err)
	}
	if err := Pin(cmd.Process.Pid, want); err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/" + itoa(cmd.Process.Pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		st, err := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/task/" + e.Name() + "/status")
		if err != nil {
			continue // the thread ended
		}
		if got := allowed(string(st)); got != String(want) {
			t.Errorf("thread %s runs on CPUs %q, want %q", e.Name(), got, String(want))
		}
	}
	if len(tasks) < 5 {
		t.Errorf("the child had %d thread(s); the test wants several", len(tasks))
	}
}

func TestPinErrors(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	if err := Pin(os.Getpid(), nil); err == nil {
		t.Error("Pin to no CPUs: no error")
	}
	if err := Pin(os.Getpid(), []int{-1}); err == nil {
		t.Error("Pin to CPU -1: no error")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := Pin(cmd.Process.Pid, []int{0}); err == nil || !strings.Contains(err.Error(), "process") {
		t.Errorf("Pin of an ended process: err %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// allowed is the Cpus_allowed_list line of a /proc status file.
func allowed(status string) string {
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
