//go:build !unix

package main

import (
	"errors"
	"time"
)

// processCPU is the CPU time this process has used: not read on this
// system.
func processCPU() (time.Duration, error) {
	return 0, errors.New("no getrusage on this system")
}
