//go:build !unix

package gitfront

import "os/exec"

// killGroup leaves exec's default: the context's cancellation kills git.
func killGroup(cmd *exec.Cmd) {}
