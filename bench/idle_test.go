package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// ProcCPU reads this process's CPU time, which grows while it computes.
func TestProcCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	before, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		x++
	}
	after, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 50*time.Millisecond {
		t.Fatalf("CPU time went from %v to %v over 300 ms of computing (%d)", before, after, x)
	}
	if _, err := ProcCPU(-1); err == nil {
		t.Fatal("ProcCPU of no process succeeded")
	}
}
