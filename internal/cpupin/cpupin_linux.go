package cpupin

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Available is the CPUs this process may run on, in order.
func Available() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("cpupin: reading this process's CPUs: %w", err)
	}
	var out []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// maxPasses bounds Pin's passes over a process's threads: each pass pins
// the threads it lists, and one that lists none unpinned ends it.
const maxPasses = 10

// Pin keeps every thread of process pid on cpus. A thread started while
// it runs is caught by its next pass over /proc/PID/task; one started
// after, by a pinned thread, inherits the pin. It fails if the process is
// gone or a pass could not finish within maxPasses.
func Pin(pid int, cpus []int) error {
	if len(cpus) == 0 {
		return errors.New("cpupin: no CPUs to pin to")
	}
	var set unix.CPUSet
	for _, c := range cpus {
		if c < 0 || c >= len(set)*64 {
			return fmt.Errorf("cpupin: CPU %d out of range", c)
		}
		set.Set(c)
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	var pinned []int
	for range maxPasses {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("cpupin: process %d: %w", pid, err)
		}
		fresh := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || slices.Contains(pinned, tid) {
				continue
			}
			fresh++
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue // the thread ended
				}
				return fmt.Errorf("cpupin: process %d, thread %d: %w", pid, tid, err)
			}
			pinned = append(pinned, tid)
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("cpupin: process %d kept starting threads through %d passes", pid, maxPasses)
}
