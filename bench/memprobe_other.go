//go:build !linux

package bench

import "time"

// threadCPU: no thread CPU clock is read here, so the probe samples
// nothing.
func threadCPU() (time.Duration, bool) { return 0, false }
