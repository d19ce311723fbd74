// Package pktline reads and writes git's pkt-line framing: a four-digit
// hexadecimal length (which counts itself) followed by that many bytes
// minus four, plus the special packets flush (0000), delim (0001) and
// response-end (0002) of protocol v2.
//
// It is shared by packcache, which decodes upload-pack requests and checks
// git's responses, and by the git front end. Nothing here panics on bad
// input: every malformed header is an error wrapping ErrInvalidLength or
// ErrTooLong.
package pktline

import (
	"errors"
	"fmt"
	"io"
)

const (
	// MaxPacketLen is the largest packet git accepts, header included
	// (LARGE_PACKET_MAX in git's pkt-line.h).
	MaxPacketLen = 65520
	// MaxPayloadLen is the largest payload of a data packet.
	MaxPayloadLen = MaxPacketLen - 4
	// HeaderLen is the length of a packet's length prefix.
	HeaderLen = 4
)

// Type is the kind of a packet.
type Type uint8

const (
	// Data is a packet that carries a payload (possibly empty: "0004").
	Data Type = iota
	// Flush ("0000") ends a message or, in v2, a response.
	Flush
	// Delim ("0001") separates sections in protocol v2.
	Delim
	// ResponseEnd ("0002") ends a stateless v2 response.
	ResponseEnd
)

// String returns the packet type's name.
func (t Type) String() string {
	switch t {
	case Data:
		return "data"
	case Flush:
		return "flush"
	case Delim:
		return "delim"
	case ResponseEnd:
		return "response-end"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

var (
	// ErrInvalidLength means a header is not four hexadecimal digits, or
	// is 0003, which no packet may have.
	ErrInvalidLength = errors.New("pktline: invalid packet length")
	// ErrTooLong means a header announces more than MaxPacketLen bytes, or
	// a payload to write is longer than MaxPayloadLen.
	ErrTooLong = errors.New("pktline: packet too long")
)

// ParseHeader decodes a four-byte length header. For a data packet it
// returns Data and the payload length; for 0000, 0001 and 0002 it returns
// the special type and 0.
func ParseHeader(h [HeaderLen]byte) (Type, int, error) {
	n := 0
	for _, c := range h {
		d, ok := hexDigit(c)
		if !ok {
			return 0, 0, fmt.Errorf("%w: header %q", ErrInvalidLength, h[:])
		}
		n = n<<4 | d
	}
	switch {
	case n == 0:
		return Flush, 0, nil
	case n == 1:
		return Delim, 0, nil
	case n == 2:
		return ResponseEnd, 0, nil
	case n < HeaderLen:
		return 0, 0, fmt.Errorf("%w: header %q", ErrInvalidLength, h[:])
	case n > MaxPacketLen:
		return 0, 0, fmt.Errorf("%w: header announces %d bytes, the limit is %d", ErrTooLong, n, MaxPacketLen)
	}
	return Data, n - HeaderLen, nil
}

func hexDigit(c byte) (int, bool) {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0'), true
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10, true
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

// Reader reads packets from an io.Reader. It is not safe for concurrent
// use. It reads exactly the bytes of the packets it returns, so after the
// last packet the underlying reader is positioned right behind it.
type Reader struct {
	r   io.Reader
	buf []byte
}

// NewReader returns a Reader reading from r. Wrap r in a bufio.Reader
// when it is unbuffered: every packet costs two reads.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r}
}

// Next reads one packet. The payload is only valid until the next call;
// it is nil for special packets. At a clean end of input (no bytes of a
// new packet) it returns io.EOF; a packet cut short returns
// io.ErrUnexpectedEOF; a bad header an error wrapping ErrInvalidLength or
// ErrTooLong.
func (r *Reader) Next() (Type, []byte, error) {
	var h [HeaderLen]byte
	if _, err := io.ReadFull(r.r, h[:]); err != nil {
		return 0, nil, err
	}
	t, n, err := ParseHeader(h)
	if err != nil || t != Data {
		return t, nil, err
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n, max(n, 1024))
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return Data, r.buf, nil
}

// TrimLF returns p without one trailing newline, which git adds to text
// packets and readers must accept with or without.
func TrimLF(p []byte) []byte {
	if len(p) > 0 && p[len(p)-1] == '\n' {
		return p[:len(p)-1]
	}
	return p
}
