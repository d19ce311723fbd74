package testkit

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// Logger is a test's logger: silent, unless SHOAL_TEST_LOG is set, when it
// writes debug logs to stderr tagged with the test's name.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// MinWait is the least Eventually waits, whatever its caller asks: the
// suite runs on 2 shared cores where the load average can pass 10, and a
// condition that takes a second on a quiet machine can take many there.
// Waiting longer costs nothing when the condition holds (Eventually
// returns as soon as it does); only a failing test waits it out.
const MinWait = 30 * time.Second

// Eventually polls cond every 5 ms until it holds, failing the test if it
// does not within d, or MinWait if that is longer. what names the awaited
// condition in the failure. It is for conditions that must come to hold,
// never for bounds on how fast: a test that measures a delay measures it.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = max(d, MinWait)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SyncBuffer is a log destination safe for concurrent writers, which the
// test reads afterwards.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
