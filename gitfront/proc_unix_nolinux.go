//go:build unix && !linux

package gitfront

import "syscall"

// dieWithParent does nothing where the kernel has no parent-death signal:
// a receive-pack outliving its node is bounded by the push marker's
// expiry only (see the pack cache's doc).
func dieWithParent(*syscall.SysProcAttr) {}
