//go:build !linux

package localcluster

import "syscall"

// childProcAttr puts a child in its own process group; without Linux's
// parent-death signal the children rely on polling --parent-pid.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
