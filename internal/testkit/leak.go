// Package testkit holds helpers shared by shoal's tests.
package testkit

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// MainNoLeaks runs the package's tests and then fails the run if
// goroutines are left over, like goleak.VerifyTestMain, but it gives them
// up to grace to finish first: memberlist's Shutdown does not wait for the
// probe it may have in flight, which ends on its own within a probe
// interval (longer while its awareness score is raised).
//
// One goroutine is always allowed: cp's wait for a raft leadership
// verification that raft never answers (see cp.Store.verifyLeader: raft
// drops a verification queued when it stops leading or shuts down). It
// holds a few hundred bytes and nothing else.
func MainNoLeaks(m *testing.M, grace time.Duration, opts ...goleak.Option) {
	opts = append(opts, goleak.IgnoreAnyFunction("github.com/shoal-dev/shoal/cluster/cp.(*Store).verifyLeader.func1"))
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(grace)
		for {
			err := goleak.Find(opts...)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goroutines leaked after the tests passed:\n%v\n", err)
				code = 1
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	os.Exit(code)
}
