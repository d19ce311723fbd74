// Package wire is the framing layer of shoal's peer RPC: the Frame, its
// length-prefixed msgpack encoding, and the Network a peer RPC runs over.
//
// A frame on a stream is a 4-byte big-endian length followed by that many
// bytes holding one msgpack array of five elements:
//
//	[kind uint, id uint, timeout_us uint, type str, body bin|nil]
//
// The length is bounded (MaxFrameSize) before anything is allocated, and the
// decoder accepts exactly that shape: any other byte sequence is a
// *FrameError, never a panic. The hand-written codec avoids reflection on the
// hot path; it is still plain msgpack, so a frame can be read with any
// msgpack tool.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// Kind says what a frame is for.
type Kind uint8

const (
	// KindRequest expects exactly one KindResponse or KindError with the same ID.
	KindRequest Kind = 1
	// KindResponse carries a handler's result in Body.
	KindResponse Kind = 2
	// KindError carries a handler's error text in Body.
	KindError Kind = 3
	// KindOneway is fire-and-forget: no response is sent.
	KindOneway Kind = 4
	// KindHello opens a connection: Body is the sender's node name.
	KindHello Kind = 5

	maxKind = KindHello
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindResponse:
		return "response"
	case KindError:
		return "error"
	case KindOneway:
		return "oneway"
	case KindHello:
		return "hello"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Limits on a frame's parts.
const (
	// DefaultMaxFrameSize bounds a frame when the Network is not told otherwise.
	DefaultMaxFrameSize = 8 << 20
	// MaxTypeLen bounds a frame's Type.
	MaxTypeLen = 255
	// headerLen is the length prefix.
	headerLen = 4
)

// Frame is one message on a peer connection.
type Frame struct {
	Kind Kind
	// ID pairs a request with its response; zero for one-way and hello frames.
	ID uint64
	// Timeout is the caller's remaining deadline for a request (zero: none),
	// carried to the handler so that it can give up when the caller has.
	Timeout time.Duration
	// Type selects the handler of a request or one-way frame.
	Type string
	// Body is the payload. A decoded frame's Body aliases the buffer the
	// frame was read into; the receiver owns it.
	Body []byte
}

// FrameError describes a frame that could not be decoded. A connection that
// reads one is closed: after a bad frame, the stream's framing is lost.
type FrameError struct {
	Reason string
}

func (e *FrameError) Error() string { return "wire: malformed frame: " + e.Reason }

// ErrFrameTooLarge is returned (wrapped in a *FrameError's chain) for a frame
// whose declared or encoded length exceeds the limit.
var ErrFrameTooLarge = errors.New("wire: frame too large")

type tooLargeError struct{ n, max int }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("wire: frame of %d bytes exceeds the limit of %d", e.n, e.max)
}
func (e *tooLargeError) Unwrap() error { return ErrFrameTooLarge }

func malformed(format string, args ...any) error {
	return &FrameError{Reason: fmt.Sprintf(format, args...)}
}

// EncodedLen is the number of bytes AppendFrame appends for f, prefix included.
func EncodedLen(f *Frame) int {
	return headerLen + 1 + 1 + uintLen(f.ID) + uintLen(timeoutMicros(f.Timeout)) +
		strHeaderLen(len(f.Type)) + len(f.Type) + binHeaderLen(len(f.Body)) + len(f.Body)
}

// AppendFrame appends f's encoding to dst. It fails if f's Type is longer
// than MaxTypeLen, its kind is unknown, or the frame would exceed max bytes.
func AppendFrame(dst []byte, f *Frame, max int) ([]byte, error) {
	if f.Kind == 0 || f.Kind > maxKind {
		return dst, fmt.Errorf("wire: cannot encode frame of unknown %v", f.Kind)
	}
	if len(f.Type) > MaxTypeLen {
		return dst, fmt.Errorf("wire: frame type of %d bytes exceeds %d", len(f.Type), MaxTypeLen)
	}
	n := EncodedLen(f)
	if n-headerLen > max {
		return dst, &tooLargeError{n: n - headerLen, max: max}
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n-headerLen))
	dst = append(dst, 0x95, byte(f.Kind))
	dst = appendUint(dst, f.ID)
	dst = appendUint(dst, timeoutMicros(f.Timeout))
	dst = appendStr(dst, f.Type)
	return appendBin(dst, f.Body), nil
}

// ReadFrame reads one frame from r into a freshly allocated buffer. It
// returns io.EOF only when r ends cleanly between frames; a stream cut
// inside a frame is io.ErrUnexpectedEOF. A length above max is refused before
// the body is read.
func ReadFrame(r io.Reader, max int) (Frame, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return Frame{}, &tooLargeError{n: int(n), max: max}
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return DecodeFrame(buf)
}

// DecodeFrame decodes the msgpack part of a frame (without the length
// prefix). Body aliases buf.
func DecodeFrame(buf []byte) (Frame, error) {
	d := decoder{buf: buf}
	if b := d.byte(); b != 0x95 {
		if d.err != nil {
			return Frame{}, d.err
		}
		return Frame{}, malformed("expected a 5-element array, found byte 0x%02x", b)
	}
	var f Frame
	kind := d.uint("kind")
	id := d.uint("id")
	us := d.uint("timeout")
	f.Type = d.str("type")
	f.Body = d.bin("body")
	if d.err != nil {
		return Frame{}, d.err
	}
	if kind == 0 || kind > uint64(maxKind) {
		return Frame{}, malformed("unknown kind %d", kind)
	}
	if us > math.MaxInt64/uint64(time.Microsecond) {
		return Frame{}, malformed("timeout of %d µs out of range", us)
	}
	if d.off != len(buf) {
		return Frame{}, malformed("%d trailing bytes after the frame", len(buf)-d.off)
	}
	f.Kind, f.ID, f.Timeout = Kind(kind), id, time.Duration(us)*time.Microsecond
	return f, nil
}

func timeoutMicros(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	if us := d / time.Microsecond; us > 0 {
		return uint64(us)
	}
	return 1 // a positive deadline under 1 µs must not read as "none"
}

func uintLen(v uint64) int {
	switch {
	case v < 128:
		return 1
	case v <= math.MaxUint8:
		return 2
	case v <= math.MaxUint16:
		return 3
	case v <= math.MaxUint32:
		return 5
	}
	return 9
}

func appendUint(dst []byte, v uint64) []byte {
	switch {
	case v < 128:
		return append(dst, byte(v))
	case v <= math.MaxUint8:
		return append(dst, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), v)
}

func strHeaderLen(n int) int {
	if n < 32 {
		return 1
	}
	return 2 // str8: MaxTypeLen fits
}

func appendStr(dst []byte, s string) []byte {
	if len(s) < 32 {
		dst = append(dst, 0xa0|byte(len(s)))
	} else {
		dst = append(dst, 0xd9, byte(len(s)))
	}
	return append(dst, s...)
}

func binHeaderLen(n int) int {
	switch {
	case n == 0:
		return 1 // nil
	case n <= math.MaxUint8:
		return 2
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

func appendBin(dst []byte, b []byte) []byte {
	n := len(b)
	switch {
	case n == 0:
		return append(dst, 0xc0)
	case n <= math.MaxUint8:
		dst = append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
	}
	return append(dst, b...)
}

// decoder reads msgpack values from buf, recording the first error.
type decoder struct {
	buf []byte
	off int
	err error
}

func (d *decoder) need(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.buf)-d.off < n {
		d.err = malformed("%s: need %d bytes, have %d", what, n, len(d.buf)-d.off)
		return nil
	}
	b := d.buf[d.off : d.off+n]
	d.off += n
	return b
}

func (d *decoder) byte() byte {
	b := d.need(1, "array header")
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *decoder) uint(field string) uint64 {
	t := d.need(1, field)
	if t == nil {
		return 0
	}
	switch c := t[0]; {
	case c < 0x80:
		return uint64(c)
	case c == 0xcc:
		if b := d.need(1, field); b != nil {
			return uint64(b[0])
		}
	case c == 0xcd:
		if b := d.need(2, field); b != nil {
			return uint64(binary.BigEndian.Uint16(b))
		}
	case c == 0xce:
		if b := d.need(4, field); b != nil {
			return uint64(binary.BigEndian.Uint32(b))
		}
	case c == 0xcf:
		if b := d.need(8, field); b != nil {
			return binary.BigEndian.Uint64(b)
		}
	default:
		d.err = malformed("%s: expected an unsigned integer, found byte 0x%02x", field, c)
	}
	return 0
}

func (d *decoder) str(field string) string {
	t := d.need(1, field)
	if t == nil {
		return ""
	}
	var n int
	switch c := t[0]; {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9:
		b := d.need(1, field)
		if b == nil {
			return ""
		}
		n = int(b[0])
	default:
		d.err = malformed("%s: expected a string of at most %d bytes, found byte 0x%02x", field, MaxTypeLen, c)
		return ""
	}
	return string(d.need(n, field))
}

func (d *decoder) bin(field string) []byte {
	t := d.need(1, field)
	if t == nil {
		return nil
	}
	var n int
	switch t[0] {
	case 0xc0:
		return nil
	case 0xc4:
		if b := d.need(1, field); b != nil {
			n = int(b[0])
		}
	case 0xc5:
		if b := d.need(2, field); b != nil {
			n = int(binary.BigEndian.Uint16(b))
		}
	case 0xc6:
		if b := d.need(4, field); b != nil {
			n = int(binary.BigEndian.Uint32(b))
		}
	default:
		d.err = malformed("%s: expected binary data or nil, found byte 0x%02x", field, t[0])
		return nil
	}
	b := d.need(n, field)
	if len(b) == 0 {
		return nil
	}
	return b[:n:n]
}
