package localcluster

import "syscall"

// childProcAttr puts a child in its own process group (so a Ctrl-C reaches
// only the parent, which then stops the children in order) and asks the
// kernel to send it SIGTERM if the parent dies. The children also poll for
// their parent (--parent-pid), since the kernel's signal is tied to the
// thread that started them.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
