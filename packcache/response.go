package packcache

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/shoal-dev/shoal/internal/pktline"
)

// ErrIncomplete is wrapped when git's response does not end as the
// protocol requires, or carries an error (an ERR packet or side-band 3).
var ErrIncomplete = errors.New("packcache: git's response is incomplete or an error")

// phases of a response.
const (
	phaseLines    = iota // v0: shallow lines, flush, NAK; v2: sections before packfile
	phasePack            // side-band packets of the pack
	phaseComplete        // the final flush was seen
)

// checker follows git's upload-pack response as it is written, without
// buffering it, and says whether it ended as the protocol requires:
//
//	v0/v1 (side-band): [shallow/unshallow lines, flush], NAK or ACK,
//	  side-band packets (band 1 pack, band 2 progress), flush.
//	v2: [shallow-info / wanted-refs / ... sections, each closed by delim],
//	  "packfile", side-band packets, flush.
//	v2 ls-refs: ref lines ("<oid> <refname>[ <attribute>...]" or
//	  "unborn HEAD[ symref-target:<ref>]"), flush. No refs at all is a
//	  lone flush, complete too.
//
// An ERR packet, a band-3 packet, a malformed packet or anything after the
// final flush is an error. Not safe for concurrent use.
type checker struct {
	version int
	lsRefs  bool // the response to a v2 ls-refs, not a fetch
	phase   int
	hdr     [pktline.HeaderLen]byte
	nhdr    int
	remain  int      // payload bytes of the current packet still to come
	head    [16]byte // the first bytes of the current payload
	nhead   int
	plen    int // the current payload's length
	err     error
}

// feed consumes the next bytes of the response.
func (c *checker) feed(p []byte) {
	for len(p) > 0 && c.err == nil {
		if c.remain == 0 {
			p = c.feedHeader(p)
			continue
		}
		n := min(len(p), c.remain)
		c.nhead += copy(c.head[c.nhead:], p[:n])
		c.remain -= n
		p = p[n:]
		if c.remain == 0 {
			c.data(c.head[:c.nhead], c.plen)
		}
	}
}

// feedHeader consumes header bytes and acts on special packets.
func (c *checker) feedHeader(p []byte) []byte {
	n := copy(c.hdr[c.nhdr:], p)
	c.nhdr += n
	if c.nhdr < len(c.hdr) {
		return p[n:]
	}
	c.nhdr = 0
	t, plen, err := pktline.ParseHeader(c.hdr)
	switch {
	case err != nil:
		c.fail("%v", err)
	case c.phase == phaseComplete:
		c.fail("data after the final flush")
	case t == pktline.Data && plen == 0:
		c.data(nil, 0)
	case t == pktline.Data:
		c.remain, c.plen, c.nhead = plen, plen, 0
	default:
		c.special(t)
	}
	return p[n:]
}

func (c *checker) special(t pktline.Type) {
	switch {
	case c.lsRefs && t == pktline.Flush:
		c.phase = phaseComplete
	case c.lsRefs:
		c.fail("unexpected %v packet in an ls-refs response", t)
	case t == pktline.Flush && c.phase == phasePack:
		c.phase = phaseComplete
	case t == pktline.Flush && c.version < 2: // ends the shallow lines
	case t == pktline.Delim && c.version == 2 && c.phase == phaseLines: // ends a section
	default:
		c.fail("unexpected %v packet", t)
	}
}

// data judges a data packet from its first bytes.
func (c *checker) data(head []byte, n int) {
	if c.lsRefs {
		c.refLine(head)
		return
	}
	if c.phase == phasePack {
		switch {
		case n == 0 || head[0] > 3:
			c.fail("bad side-band packet")
		case head[0] == 3:
			c.fail("side-band 3: %q", head[1:])
		}
		return
	}
	line := pktline.TrimLF(head)
	switch {
	case bytes.HasPrefix(line, []byte("ERR ")):
		c.fail("%q", line)
	case c.version == 2 && n == len("packfile\n") && string(line) == "packfile":
		c.phase = phasePack
	case c.version < 2 && (string(line) == "NAK" || bytes.HasPrefix(line, []byte("ACK "))):
		c.phase = phasePack
	}
}

// refLine judges a line of an ls-refs response from its first bytes:
// an object id (its first len(c.head) digits) and a space, or "unborn ".
// Anything else, an ERR packet first, is an error.
func (c *checker) refLine(head []byte) {
	line := pktline.TrimLF(head)
	switch {
	case bytes.HasPrefix(line, []byte("unborn ")):
		return
	case bytes.HasPrefix(line, []byte("ERR ")):
		c.fail("%q", line)
		return
	case len(head) < len(c.head):
		c.fail("short ls-refs line %q", line) // an id alone is 40 digits
		return
	}
	for _, b := range head {
		if !('0' <= b && b <= '9' || 'a' <= b && b <= 'f') {
			c.fail("ls-refs line %q does not start with an object id", line)
			return
		}
	}
}

func (c *checker) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{ErrIncomplete}, args...)...)
	}
}

// result returns nil if the response seen so far is complete and clean.
func (c *checker) result() error {
	if c.err == nil && (c.phase != phaseComplete || c.nhdr != 0 || c.remain != 0) {
		return fmt.Errorf("%w: response ends before its final flush", ErrIncomplete)
	}
	return c.err
}
