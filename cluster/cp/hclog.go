package cp

import (
	"context"
	"encoding/json"
	"log/slog"

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
	attrs := make([]slog.Attr, 0, len(rec))
	for k, v := range rec {
		if k != "@level" && k != "@message" && k != "@timestamp" {
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	w.l.LogAttrs(context.Background(), level, msg, attrs...)
	return len(p), nil
}
