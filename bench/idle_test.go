package bench

import (
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// ProcCPU reads this process's CPU time, which grows while it computes:
// it agrees with getrusage's count of the same process over the same
// interval. (The loop runs until the process has used 200 ms of CPU, not
// for a wall-clock time: a loaded machine may give it almost none.)
func TestProcCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ru0 := rusage()
	x := 0
	for deadline := time.Now().Add(2 * time.Minute); rusage()-ru0 < 200*time.Millisecond; x++ {
		if time.Now().After(deadline) {
			t.Fatalf("the process got %v of CPU in 2 minutes", rusage()-ru0)
		}
	}
	after, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	used := rusage() - ru0
	// /proc counts in clock ticks (10 ms): allow a few, and the other
	// goroutines' work between the readings.
	if got := after - before; got < used-50*time.Millisecond || got > used+200*time.Millisecond {
		t.Fatalf("ProcCPU went from %v to %v (%v) while getrusage counted %v (%d iterations)", before, after, got, used, x)
	}
	if _, err := ProcCPU(-1); err == nil {
		t.Fatal("ProcCPU of no process succeeded")
	}
}

// ProcSwitches counts a thread's sleeps: twenty nanosleeps of this test's
// own (locked) thread add at least twenty voluntary context switches.
func TestProcSwitches(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := ProcSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		ts := syscall.Timespec{Nsec: int64(time.Millisecond)}
		if err := syscall.Nanosleep(&ts, nil); err != nil {
			t.Fatal(err)
		}
	}
	after, err := ProcSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 20 {
		t.Fatalf("20 sleeps added %d voluntary context switches (%d → %d)", after-before, before, after)
	}
}
