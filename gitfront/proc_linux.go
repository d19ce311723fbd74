//go:build linux

package gitfront

import "syscall"

// dieWithParent has the kernel SIGKILL git when the node that started it
// dies, so that a receive-pack cannot move a ref after its node (and the
// renewals of its push marker) are gone. Go delivers it when the thread
// that started git exits; the runtime keeps its threads for the life of
// the process unless a goroutine locked to one ends, which shoal does not
// do.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
