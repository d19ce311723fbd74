package gitfront

import (
	"bytes"
	"context"
	"io"
	"strings"

	"github.com/shoal-dev/shoal/internal/pktline"
)

// RefUpdate is one command of a push: set Ref from Old to New (hex object
// IDs; all zeros for a created or deleted ref).
type RefUpdate struct {
	Old, New, Ref string
}

// Deleted reports whether the update deletes the ref.
func (u RefUpdate) Deleted() bool { return strings.Trim(u.New, "0") == "" }

type refUpdatesKey struct{}

// RefUpdates returns the ref updates a push asked for, from the context
// GitConfig.OnPush is called with: what the client requested, parsed from
// the receive-pack command list (the first maxCommandBytes of the body),
// whether or not git accepted each one. Nil elsewhere.
func RefUpdates(ctx context.Context) []RefUpdate {
	u, _ := ctx.Value(refUpdatesKey{}).([]RefUpdate)
	return u
}

// maxCommandBytes bounds the command list kept from a push: a few
// thousand ref updates.
const maxCommandBytes = 256 << 10

// commandRecorder passes a receive-pack body through and keeps its first
// bytes, which hold the command list.
type commandRecorder struct {
	r   io.Reader
	buf []byte
}

func (c *commandRecorder) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if room := maxCommandBytes - len(c.buf); room > 0 && n > 0 {
		c.buf = append(c.buf, b[:min(n, room)]...)
	}
	return n, err
}

// updates parses the command list: "old new ref" pkt-lines (the first
// followed by NUL and capabilities) up to the flush-pkt. Other lines
// (shallow, push-cert) are skipped; a list cut short by the bound yields
// the commands read so far.
func (c *commandRecorder) updates() []RefUpdate {
	pr := pktline.NewReader(bytes.NewReader(c.buf))
	var out []RefUpdate
	for {
		t, p, err := pr.Next()
		if err != nil || t != pktline.Data {
			return out
		}
		line, _, _ := strings.Cut(string(pktline.TrimLF(p)), "\x00")
		f := strings.Fields(line)
		if len(f) == 3 && isHexID(f[0]) && isHexID(f[1]) {
			out = append(out, RefUpdate{Old: f[0], New: f[1], Ref: f[2]})
		}
	}
}

func isHexID(s string) bool {
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

// PushedBranches are the branches a push asked to create or move (not
// delete), each with the object it asked for.
func PushedBranches(updates []RefUpdate) map[string]string {
	asked := map[string]string{}
	for _, u := range updates {
		if b, ok := strings.CutPrefix(u.Ref, "refs/heads/"); ok && !u.Deleted() && u.Old != u.New {
			asked[b] = u.New
		}
	}
	return asked
}

// BranchesAt reports which of want's branches point, in the bare
// repository dir, at the object want gives them (after a push: git may
// have refused some of the updates it was asked for). ctx bounds git.
func BranchesAt(ctx context.Context, dir string, want map[string]string) (map[string]bool, error) {
	args := []string{"for-each-ref", "--format=%(objectname) %(refname)"}
	for b := range want {
		args = append(args, "refs/heads/"+b)
	}
	out, err := gitOutput(ctx, dir, args...)
	if err != nil {
		return nil, err
	}
	at := map[string]bool{}
	for line := range strings.Lines(out) {
		id, ref, _ := strings.Cut(strings.TrimSpace(line), " ")
		if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok && want[b] == id {
			at[b] = true
		}
	}
	return at, nil
}
