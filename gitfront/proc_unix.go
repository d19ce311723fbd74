//go:build unix

package gitfront

import (
	"os/exec"
	"syscall"
)

// killGroup makes git the leader of its own process group and has the
// context's cancellation kill the whole group, so upload-pack's
// pack-objects child dies with it instead of running on.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
