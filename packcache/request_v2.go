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
	switch r.Command {
	case "fetch":
	case "ls-refs":
		return r.lsRefsArg(line)
	default:
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

// tooManyPrefixes is git's TOO_MANY_PREFIXES (ls-refs.c): from that many
// ref-prefix arguments on, git drops them all and lists every ref. The
// cache leaves such requests to git rather than copy that rule.
const tooManyPrefixes = 65536

// lsRefsArg decodes one argument of a v2 ls-refs command, as git's
// ls-refs.c does: the flags "symrefs", "peel" and "unborn", and
// "ref-prefix <prefix>" (the prefix may be empty: it matches every ref).
// A known keyword in the wrong shape ("peel x", "ref-prefix" without its
// space) is malformed: git dies on it with "unexpected line". An unknown
// keyword is recorded in Unknown, so the request goes to git, which
// answers it (today with its own error; a newer git might know it).
func (r *Request) lsRefsArg(line string) error {
	if prefix, ok := strings.CutPrefix(line, "ref-prefix "); ok {
		r.RefPrefixes = append(r.RefPrefixes, prefix)
		return nil
	}
	kw, _, _ := strings.Cut(line, " ")
	flag := map[string]*bool{"symrefs": &r.Symrefs, "peel": &r.Peel, "unborn": &r.Unborn}[kw]
	switch {
	case flag != nil && kw == line:
		*flag = true
	case flag != nil || kw == "ref-prefix":
		return fmt.Errorf("bad ls-refs argument %q: %s", clip(line), lsRefsUsage(kw))
	case line == "":
		return errors.New("empty ls-refs argument")
	default:
		r.Unknown = append(r.Unknown, "ls-refs argument "+clip(line))
	}
	return nil
}

func lsRefsUsage(kw string) string {
	if kw == "ref-prefix" {
		return `want "ref-prefix <prefix>"`
	}
	return "it takes no value"
}

// Bypass returns nil when the request can be served from the cache, or
// an error wrapping ErrBypass that says why not.
func (r *Request) Bypass() error {
	why := ""
	switch {
	case r.Command == "ls-refs":
		return r.lsRefsBypass()
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

// lsRefsBypass is Bypass for ls-refs: cacheable unless it carries
// something the decoder did not understand or too many prefixes.
func (r *Request) lsRefsBypass() error {
	switch {
	case len(r.Unknown) > 0:
		return fmt.Errorf("%w: not understood: %s", ErrBypass, strings.Join(r.Unknown, ", "))
	case len(r.RefPrefixes) >= tooManyPrefixes:
		return fmt.Errorf("%w: %d ref-prefix arguments (git ignores them from %d on)", ErrBypass, len(r.RefPrefixes), tooManyPrefixes)
	}
	return nil
}
