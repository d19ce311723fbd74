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
// Two goroutines are always allowed, each parked on a raft future that
// raft never answers, holding a few hundred bytes and nothing else: cp's
// wait for a leadership verification (cp.Store.startRound; raft drops a
// verification queued when it stops leading or shuts down: see
// cp.Store.verifyLeader), and cp's wait for an Apply future (the
// goroutine in cp.Store.applyLocal; seen once in a loop of 200: raft
// shut down with an entry handed to its state machine but not yet
// answered).
func MainNoLeaks(m *testing.M, grace time.Duration, opts ...goleak.Option) {
	opts = append(opts,
		goleak.IgnoreAnyFunction("github.com/shoal-dev/shoal/cluster/cp.(*Store).startRound.func1"),
		goleak.IgnoreAnyFunction("github.com/shoal-dev/shoal/cluster/cp.(*Store).applyLocal.func1"))
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
