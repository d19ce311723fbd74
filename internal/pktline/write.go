package pktline

import (
	"fmt"
	"io"
)

// The special packets, ready to write.
var (
	FlushPkt       = []byte("0000")
	DelimPkt       = []byte("0001")
	ResponseEndPkt = []byte("0002")
)

const hexdigits = "0123456789abcdef"

// AppendData appends p framed as one data packet to dst. It returns an
// error wrapping ErrTooLong, and dst unchanged, when p is longer than
// MaxPayloadLen.
func AppendData(dst, p []byte) ([]byte, error) {
	if len(p) > MaxPayloadLen {
		return dst, fmt.Errorf("%w: payload of %d bytes, the limit is %d", ErrTooLong, len(p), MaxPayloadLen)
	}
	n := len(p) + HeaderLen
	dst = append(dst, hexdigits[n>>12&15], hexdigits[n>>8&15], hexdigits[n>>4&15], hexdigits[n&15])
	return append(dst, p...), nil
}

// AppendString is AppendData for a string.
func AppendString(dst []byte, s string) ([]byte, error) {
	return AppendData(dst, []byte(s))
}

// Writer writes packets to an io.Writer, one Write call per packet. It is
// not safe for concurrent use. It does not buffer: wrap w in a
// bufio.Writer when many small packets go to a socket.
type Writer struct {
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w}
}

// Data writes p as one data packet; see AppendData for its limit.
func (w *Writer) Data(p []byte) error {
	b, err := AppendData(w.buf[:0], p)
	if err != nil {
		return err
	}
	w.buf = b
	_, err = w.w.Write(b)
	return err
}

// Line writes s as one data packet, adding a newline if s lacks one.
func (w *Writer) Line(s string) error {
	if len(s) == 0 || s[len(s)-1] != '\n' {
		s += "\n"
	}
	return w.Data([]byte(s))
}

// Flush writes a flush packet (0000). It does not flush w.
func (w *Writer) Flush() error { _, err := w.w.Write(FlushPkt); return err }

// Delim writes a delim packet (0001).
func (w *Writer) Delim() error { _, err := w.w.Write(DelimPkt); return err }

// ResponseEnd writes a response-end packet (0002).
func (w *Writer) ResponseEnd() error { _, err := w.w.Write(ResponseEndPkt); return err }
