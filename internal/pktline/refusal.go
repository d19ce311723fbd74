package pktline

import (
	"bytes"
	"strings"
)

// requestFaults are what git upload-pack says, in a fatal error, when it
// refuses the request it was sent rather than failing itself: an unknown
// v2 command or capability, another object format, an argument it does
// not know, a line where a flush belongs, a malformed want or shallow
// line (serve.c, upload-pack.c, ls-refs.c, protocol.c).
var requestFaults = []string{
	"invalid command", "unknown capability", "object format", "unexpected line", "expected flush",
	"protocol error", "expected to get object id", "expected sha1", "invalid shallow", "invalid deepen",
	"invalid want", "invalid filter", "unknown ref", "not our ref", "expected packfile-uris", "bad capability",
}

// RequestRefused reports whether git's standard error (a fatal message
// that git printed before writing any response) says that git refused
// the request as malformed — the client's fault, not the server's — and
// returns git's message without its "fatal: " prefix.
func RequestRefused(stderr []byte) (msg string, refused bool) {
	for _, line := range strings.Split(string(bytes.TrimSpace(stderr)), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "fatal: ")
		if !ok {
			continue
		}
		low := strings.ToLower(rest)
		for _, f := range requestFaults {
			if strings.Contains(low, f) {
				return rest, true
			}
		}
	}
	return "", false
}
