package testkit

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

// Logger is a test's logger: silent, unless SHOAL_TEST_LOG is set, when it
// writes debug logs to stderr tagged with the test's name.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
