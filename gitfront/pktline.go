package gitfront

import (
	"errors"
	"fmt"
	"io"

	"github.com/shoal-dev/shoal/internal/pktline"
)

// pktMode says how much of a request body is pkt-lines.
type pktMode uint8

const (
	// pktAll: the whole body is pkt-lines (upload-pack requests) and must
	// end with a flush-pkt or a "done" line.
	pktAll pktMode = iota
	// pktCommands: pkt-lines up to the first flush-pkt, then raw pack data
	// (receive-pack requests).
	pktCommands
)

// pktReader passes a request body through unchanged while checking its
// pkt-line framing, so that a malformed or cut-off request is refused
// with 400 and git is stopped, instead of git dying with a vague error.
// It reads nothing ahead. Err reports the first framing error.
type pktReader struct {
	r    io.Reader
	mode pktMode

	hdr    [4]byte
	hdrN   int    // header bytes seen of the current pkt
	remain int    // payload bytes left in the current pkt
	head   []byte // start of the current payload, to spot "done\n"
	last   string // "flush", "delim", "done" or "data": the last pkt
	raw    bool   // past the command list: no more framing
	err    error
}

func newPktReader(r io.Reader, mode pktMode) *pktReader {
	return &pktReader{r: r, mode: mode}
}

// Read reads from the underlying body and checks what it read. A framing
// error, or an end of body in the middle of the request, is returned as
// an error wrapping ErrMalformed.
func (p *pktReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.r.Read(b)
	if ferr := p.scan(b[:n]); ferr != nil {
		p.err = ferr
		return 0, ferr
	}
	if err != nil && (errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrSlowBody)) {
		// The client's fault, kept: whoever reads the body (git's stdin
		// copier) may drop the error, and it explains git's failure.
		p.err = err
		return n, err
	}
	if err == io.EOF {
		if ferr := p.atEOF(); ferr != nil {
			p.err = ferr
			return n, ferr
		}
	}
	return n, err
}

// Err is the framing error found so far, if any, or the body's own
// failure that is the client's fault (too large, cut off, bad gzip, too
// slow).
func (p *pktReader) Err() error { return p.err }

func (p *pktReader) scan(b []byte) error {
	for len(b) > 0 && !p.raw {
		if p.remain > 0 {
			k := min(p.remain, len(b))
			if len(p.head) < 5 {
				p.head = append(p.head, b[:min(k, 5-len(p.head))]...)
			}
			p.remain -= k
			b = b[k:]
			p.endData()
			continue
		}
		p.hdr[p.hdrN] = b[0]
		p.hdrN++
		b = b[1:]
		if p.hdrN == 4 {
			if err := p.header(); err != nil {
				return err
			}
		}
	}
	return nil
}

// header handles a complete 4-byte length.
func (p *pktReader) header() error {
	p.hdrN = 0
	t, n, err := pktline.ParseHeader(p.hdr)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	switch t {
	case pktline.Flush:
		p.last = "flush"
		p.raw = p.mode == pktCommands
	case pktline.Delim, pktline.ResponseEnd:
		p.last = "delim"
	default:
		p.remain, p.head, p.last = n, p.head[:0], "data"
		p.endData()
	}
	return nil
}

// endData marks a finished data pkt that read "done\n" or "done".
func (p *pktReader) endData() {
	if p.remain == 0 && p.last == "data" && (string(p.head) == "done\n" || string(p.head) == "done") {
		p.last = "done"
	}
}

func (p *pktReader) atEOF() error {
	switch {
	case p.raw:
		return nil
	case p.hdrN != 0 || p.remain != 0:
		return fmt.Errorf("%w: request body ends inside a pkt-line", ErrMalformed)
	case p.mode == pktCommands:
		return fmt.Errorf("%w: request body ends before the flush-pkt after the commands", ErrMalformed)
	case p.last != "flush" && p.last != "done":
		return fmt.Errorf("%w: request body ends before its final flush-pkt", ErrMalformed)
	}
	return nil
}

// pktLine formats s as one pkt-line.
func pktLine(s string) []byte {
	return fmt.Appendf(nil, "%04x%s", len(s)+4, s)
}

// pktFlush is the flush-pkt.
var pktFlush = []byte("0000")
