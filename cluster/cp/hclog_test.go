package cp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// raft's own error lines reach slog at error level, except a transport
// closing its own connections (debug) and a peer that cannot be reached
// (warn).
func TestHCLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for _, c := range []struct {
		msg, err, want string
	}{
		{"failed to decode incoming command", "read tcp 127.0.0.1:1->127.0.0.1:2: use of closed network connection", "DEBUG"},
		{"failed to decode incoming command", "transport shutdown", "DEBUG"},
		{"failed to heartbeat to", "EOF", "WARN"},
		{"failed to appendEntries to", "dial tcp 127.0.0.1:9: connect: connection refused", "WARN"},
		{"failed to take snapshot", "disk full", "ERROR"},
	} {
		buf.Reset()
		l.Error(c.msg, "error", c.err)
		if got := buf.String(); !strings.Contains(got, "level="+c.want) || !strings.Contains(got, c.msg) {
			t.Errorf("%q (%s): logged %q, want level %s", c.msg, c.err, got, c.want)
		}
	}
}
