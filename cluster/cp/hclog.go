package cp

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger makes an hclog.Logger (what raft wants) that writes into
// slog: hclog formats each line as JSON, and slogJSONWriter turns it back
// into a record with the same level, message and fields.
func newHCLogger(l *slog.Logger) hclog.Logger {
	level := hclog.Error
	for _, c := range []struct {
		s slog.Level
		h hclog.Level
	}{{slog.LevelWarn, hclog.Warn}, {slog.LevelInfo, hclog.Info}, {slog.LevelDebug, hclog.Debug}} {
		if l.Enabled(context.Background(), c.s) {
			level = c.h
		}
	}
	return hclog.New(&hclog.LoggerOptions{Level: level, JSONFormat: true, Output: slogJSONWriter{l}})
}

type slogJSONWriter struct{ l *slog.Logger }

func (w slogJSONWriter) Write(p []byte) (int, error) {
	var rec map[string]any
	if err := json.Unmarshal(p, &rec); err != nil {
		w.l.Info(string(p))
		return len(p), nil
	}
	level := slog.LevelInfo
	switch rec["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := rec["@message"].(string)
	if level == slog.LevelError {
		errText, _ := rec["error"].(string)
		level = raftErrorLevel(msg, errText)
	}
	attrs := make([]slog.Attr, 0, len(rec))
	for k, v := range rec {
		if k != "@level" && k != "@message" && k != "@timestamp" {
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	w.l.LogAttrs(context.Background(), level, msg, attrs...)
	return len(p), nil
}

// raftErrorLevel is the level of a line raft logs as an error. Two kinds
// are not errors of this node:
//   - its own transport closing its connections at shutdown ("failed to
//     decode incoming command: use of closed network connection",
//     "transport shutdown"): routine, logged at debug;
//   - a peer that cannot be reached ("failed to heartbeat to",
//     "failed to appendEntries to", a vote request..., with EOF, connection
//     refused or reset): the peer stopped, cleanly or not, and raft retries
//     and says so on every attempt; membership reports a dead peer on its
//     own, so these are warnings.
//
// Anything else raft calls an error stays one.
func raftErrorLevel(msg, errText string) slog.Level {
	if closedLocally(errText) {
		return slog.LevelDebug
	}
	if peerUnreachable(errText) {
		return slog.LevelWarn
	}
	return slog.LevelError
}

// closedLocally reports an error that this process's own close of a
// socket or transport produced.
func closedLocally(err string) bool {
	return strings.Contains(err, "use of closed network connection") || err == "transport shutdown"
}

// peerUnreachable reports an error that says the other end went away or
// is not listening.
func peerUnreachable(err string) bool {
	for _, s := range []string{"EOF", "connection refused", "connection reset by peer", "broken pipe", "i/o timeout"} {
		if strings.Contains(err, s) {
			return true
		}
	}
	return false
}
