//go:build !unix

package dirlock

import (
	"errors"
	"os"
)

// Without flock(2) the lock file only records the PID: nothing is locked.
var errWouldBlock = errors.New("would block")

func tryLock(*os.File) error { return nil }

func unlock(*os.File) error { return nil }
