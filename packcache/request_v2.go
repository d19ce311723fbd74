package packcache

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/shoal-dev/shoal/internal/pktline"
)

// decodeV2 reads "command=<name>", the capability section, an optional
// delim and argument section, and the final flush. A stateless request
// holds exactly one command.
func (r *Request) decodeV2(pr *pktline.Reader) error {
	t, line, err := next(pr)
	if err == io.EOF {
		return errors.New("empty v2 request")
	}
	if err != nil {
		return err
	}
	cmd, ok := strings.CutPrefix(line, "command=")
	if t != pktline.Data || !ok || cmd == "" {
		return fmt.Errorf("v2 request starts with %v %q, not command=", t, clip(line))
	}
	r.Command = cmd
	t, err = r.v2Caps(pr)
	if err != nil {
		return err
	}
	if t == pktline.Delim {
		if err := r.v2Args(pr); err != nil {
			return err
		}
	}
	if _, _, err := pr.Next(); err != io.EOF {
		return fmt.Errorf("data after the final flush (%v)", err)
	}
	return nil
}

// v2Caps reads the capability section; it returns the packet that ended
// it (delim or flush).
func (r *Request) v2Caps(pr *pktline.Reader) (pktline.Type, error) {
	for {
		t, line, err := next(pr)
		if err == io.EOF {
			return 0, errors.New("v2 request ends inside its capabilities")
		}
		if err != nil {
			return 0, err
		}
		if t == pktline.Delim || t == pktline.Flush {
			return t, nil
		}
		if t != pktline.Data {
			return 0, fmt.Errorf("unexpected %v packet in the capabilities", t)
		}
		r.v2Cap(line)
	}
}

func (r *Request) v2Cap(line string) {
	switch {
	case strings.HasPrefix(line, "agent="):
		r.Agent = line[len("agent="):]
	case strings.HasPrefix(line, "session-id="):
		r.Session = line[len("session-id="):]
	case strings.HasPrefix(line, "object-format="):
		r.Features = append(r.Features, line)
	default: // server-option and anything newer change what git does
		r.Unknown = append(r.Unknown, "capability "+clip(line))
	}
}

// v2Args reads the argument section up to its flush.
func (r *Request) v2Args(pr *pktline.Reader) error {
	for {
		t, line, err := next(pr)
		if err == io.EOF {
			return errors.New("v2 request ends before its flush")
		}
		if err != nil {
			return err
		}
		if t == pktline.Flush {
			return nil
		}
		if t != pktline.Data {
			return fmt.Errorf("unexpected %v packet in the arguments", t)
		}
		if err := r.v2Arg(line); err != nil {
			return err
		}
	}
}

func (r *Request) v2Arg(line string) error {
	if r.Command != "fetch" {
		r.Args = append(r.Args, line)
		return nil
	}
	switch {
	case line == "done":
		r.Done = true
	case line == "deepen-relative":
		r.DeepenRelative = true
	case v2Flags[line]:
		r.Features = append(r.Features, line)
	case strings.HasPrefix(line, "have "):
		if err := oidArg(line, line[5:]); err != nil {
			return err
		}
		r.Haves++
	default:
		return r.arg(line)
	}
	return nil
}

// Bypass returns nil when the request can be served from the cache, or
// an error wrapping ErrBypass that says why not.
func (r *Request) Bypass() error {
	why := ""
	switch {
	case r.Command != "fetch":
		why = "command " + r.Command
	case len(r.Unknown) > 0:
		why = "not understood: " + strings.Join(r.Unknown, ", ")
	case len(r.Wants) == 0 && len(r.WantRefs) == 0:
		why = "nothing wanted"
	case r.Haves > 0:
		why = "negotiation (have lines)"
	case !r.Done:
		why = "negotiation round without done"
	case r.Version < 2 && !r.has("side-band") && !r.has("side-band-64k"):
		why = "no side-band: completeness cannot be checked"
	default:
		if _, err := normalizeFilter(r.Filter); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("%w: %s", ErrBypass, why)
}

func (r *Request) has(feature string) bool {
	for _, f := range r.Features {
		if f == feature {
			return true
		}
	}
	return false
}
