//go:build !linux

package cpupin

import "errors"

var errUnsupported = errors.New("cpupin: pinning processes to CPUs needs Linux")

// Available is the CPUs this process may run on; only on Linux.
func Available() ([]int, error) { return nil, errUnsupported }

// Pin keeps process pid on cpus; only on Linux.
func Pin(pid int, cpus []int) error { return errUnsupported }
