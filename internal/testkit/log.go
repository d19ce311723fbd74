package testkit

import (
	"io"
	"log/slog"
	"os"
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

// Eventually polls cond every 5 ms until it holds, failing the test if it
// does not within d. what names the awaited condition in the failure.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
