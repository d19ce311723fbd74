//go:build linux

package domain_test

import (
	"syscall"
	"time"
)

// rusageThread is Linux's RUSAGE_THREAD: the calling thread's usage.
const rusageThread = 1

// threadCPU is the CPU time (user and system) the calling OS thread has
// used; the caller keeps its goroutine on one thread (LockOSThread). Time
// spent waiting for a core, which a loaded machine adds at random, is not
// in it.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const haveThreadCPU = true
