package packcache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/shoal-dev/shoal/internal/pktline"
)

// ErrMalformed is wrapped by every decoding error: the request is not a
// well-formed upload-pack request. Such requests are rejected, not passed
// to git.
var ErrMalformed = errors.New("packcache: malformed upload-pack request")

// ErrBypass is wrapped by the reason a well-formed request cannot be
// served from the cache (negotiation, an unknown capability, ...). Such
// requests go straight to git.
var ErrBypass = errors.New("packcache: request bypasses the cache")

// Request is a decoded stateless upload-pack request.
type Request struct {
	Version  int    // 0, 1 or 2 (from the Git-Protocol header)
	Command  string // "fetch" (always for v0/v1), "ls-refs", ... for v2
	Agent    string // agent=..., not part of the key
	Session  string // session-id=..., not part of the key
	Features []string
	// Features are the capabilities (v0/v1: on the first want line; v2:
	// the capability section) and the v2 flag arguments (thin-pack,
	// ofs-delta, ...), in the order sent, without agent and session-id.
	Wants          []string
	WantRefs       []string // v2 want-ref
	Shallows       []string
	Depth          int
	DeepenSince    int64
	DeepenNot      []string
	DeepenRelative bool
	Filter         string // as sent
	Haves          int
	Done           bool
	// v2 ls-refs arguments.
	Symrefs, Peel, Unborn bool
	RefPrefixes           []string // as sent
	Args                  []string // v2 arguments of commands other than fetch and ls-refs
	// Unknown lists what the decoder did not understand: unknown
	// capabilities, arguments or lines. A non-empty list bypasses.
	Unknown []string
}

// ParseProtocol returns the protocol version a Git-Protocol header value
// asks for: the highest of the version=N entries git knows (0, 1, 2), 0
// when there is none, as git's determine_protocol_version_server does.
func ParseProtocol(header string) int {
	v := 0
	for _, kv := range strings.Split(header, ":") {
		switch kv {
		case "version=1":
			v = max(v, 1)
		case "version=2":
			v = 2
		}
	}
	return v
}

// DecodeRequest decodes a complete stateless upload-pack request body for
// the given protocol version. Errors wrap ErrMalformed; a well-formed
// request the cache cannot serve decodes without error and reports why in
// Bypass.
func DecodeRequest(version int, body []byte) (*Request, error) {
	r := &Request{Version: version, Command: "fetch"}
	pr := pktline.NewReader(bytes.NewReader(body))
	var err error
	if version == 2 {
		err = r.decodeV2(pr)
	} else {
		err = r.decodeV0(pr)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return r, nil
}

// next returns the next packet, with the payload's newline trimmed and
// copied into a string; io.EOF only at a clean end.
func next(pr *pktline.Reader) (pktline.Type, string, error) {
	t, p, err := pr.Next()
	return t, string(pktline.TrimLF(p)), err
}

// decodeV0 reads "want <oid> caps", more wants and the shallow, deepen
// and filter lines, a flush, then haves and "done" or a flush.
func (r *Request) decodeV0(pr *pktline.Reader) error {
	t, line, err := next(pr)
	if err == io.EOF || t == pktline.Flush {
		return r.v0Tail(pr) // no wants: git answers with nothing
	}
	if err != nil {
		return err
	}
	if t != pktline.Data {
		return fmt.Errorf("unexpected %v packet", t)
	}
	first, caps, _ := strings.Cut(line, " ")
	if first != "want" {
		return fmt.Errorf("first line %q is not a want", clip(line))
	}
	oid, caps, _ := strings.Cut(caps, " ")
	if err := r.want(oid); err != nil {
		return err
	}
	r.v0Caps(caps)
	return r.v0Lines(pr)
}

// v0Lines reads the rest of the first section up to its flush.
func (r *Request) v0Lines(pr *pktline.Reader) error {
	for {
		t, line, err := next(pr)
		if err == io.EOF {
			return errors.New("request ends before its flush")
		}
		if err != nil {
			return err
		}
		switch t {
		case pktline.Flush:
			return r.v0Tail(pr)
		case pktline.Data:
			if err := r.arg(line); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected %v packet", t)
		}
	}
}

// v0Tail reads the negotiation part: haves, flushes and a final "done".
func (r *Request) v0Tail(pr *pktline.Reader) error {
	for {
		t, line, err := next(pr)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if r.Done {
			return errors.New("data after done")
		}
		switch {
		case t == pktline.Flush:
		case t == pktline.Data && line == "done":
			r.Done = true
		case t == pktline.Data && strings.HasPrefix(line, "have "):
			if !validOID(line[5:]) {
				return fmt.Errorf("bad object id in %q", clip(line))
			}
			r.Haves++
		default:
			return fmt.Errorf("unexpected %v %q after the wants", t, clip(line))
		}
	}
}

// v0Caps records the capabilities of the first want line.
func (r *Request) v0Caps(caps string) {
	for _, c := range strings.Fields(caps) {
		switch {
		case strings.HasPrefix(c, "agent="):
			r.Agent = c[len("agent="):]
		case strings.HasPrefix(c, "session-id="):
			r.Session = c[len("session-id="):]
		case c == "deepen-relative":
			r.DeepenRelative = true
		case v0Caps[c] || strings.HasPrefix(c, "object-format="):
			r.Features = append(r.Features, c)
		default:
			r.Unknown = append(r.Unknown, "capability "+c)
		}
	}
}

// v0Caps are the capabilities a v0/v1 client may send that the cache
// understands (besides agent, session-id and object-format).
var v0Caps = map[string]bool{
	"multi_ack": true, "multi_ack_detailed": true, "no-done": true,
	"side-band": true, "side-band-64k": true, "thin-pack": true,
	"no-progress": true, "include-tag": true, "ofs-delta": true,
	"shallow": true, "deepen-since": true, "deepen-not": true,
	"filter": true, "allow-tip-sha1-in-want": true,
	"allow-reachable-sha1-in-want": true,
}

// v2Flags are the flag arguments of a v2 fetch the cache understands.
var v2Flags = map[string]bool{
	"thin-pack": true, "no-progress": true, "include-tag": true, "ofs-delta": true,
}

// arg decodes one line of the want section (v0) or one v2 fetch argument
// that takes a value. Unknown keywords are recorded, not errors.
func (r *Request) arg(line string) error {
	kw, val, _ := strings.Cut(line, " ")
	var err error
	switch kw {
	case "want":
		err = r.want(val)
	case "want-ref":
		err = nonEmpty(line, val)
		r.WantRefs = append(r.WantRefs, val)
	case "shallow":
		err = oidArg(line, val)
		r.Shallows = append(r.Shallows, val)
	case "deepen":
		r.Depth, err = strconv.Atoi(val)
		if err == nil && r.Depth <= 0 {
			err = fmt.Errorf("bad depth in %q", clip(line))
		}
	case "deepen-since":
		r.DeepenSince, err = strconv.ParseInt(val, 10, 64)
	case "deepen-not":
		err = nonEmpty(line, val)
		r.DeepenNot = append(r.DeepenNot, val)
	case "filter":
		err = nonEmpty(line, val)
		r.Filter = val
	default:
		r.Unknown = append(r.Unknown, "line "+clip(line))
	}
	if err != nil {
		return fmt.Errorf("bad %s line %q: %w", kw, clip(line), err)
	}
	return nil
}

func (r *Request) want(oid string) error {
	if err := oidArg("want "+oid, oid); err != nil {
		return err
	}
	r.Wants = append(r.Wants, oid)
	return nil
}

func oidArg(line, oid string) error {
	if !validOID(oid) {
		return fmt.Errorf("bad object id in %q", clip(line))
	}
	return nil
}

func nonEmpty(line, val string) error {
	if val == "" {
		return fmt.Errorf("missing value in %q", clip(line))
	}
	return nil
}

// validOID accepts lower-case hexadecimal SHA-1 (40) and SHA-256 (64) ids.
func validOID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// clip shortens s for error messages.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
