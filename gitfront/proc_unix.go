//go:build unix

package gitfront

import (
	"os/exec"
	"syscall"
)

// killGroup makes git the leader of its own process group and has the
// context's cancellation kill the whole group, so upload-pack's
// pack-objects child dies with it instead of running on; and git dies
// with the node where the kernel allows (dieWithParent).
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithParent(cmd.SysProcAttr)
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
