//go:build !linux

package domain_test

import "time"

// threadCPU is unavailable here: the timing test compares wall times.
func threadCPU() time.Duration { return 0 }

const haveThreadCPU = false
