//go:build !linux

package raftlog

import "os"

// preallocate does nothing here: the file grows as it is written.
func preallocate(*os.File, int64) {}
