package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// The body of a "bus" one-way frame carries one or more messages of one
// sender incarnation, in the order they were numbered, as one msgpack
// array:
//
//	[incarnation uint, topic1 str, seq1 uint, payload1 bin|nil, topic2, seq2, payload2, ...]
//
// A publish fans out as one such frame per peer, carrying whatever was
// published while the previous frames were being handed to the peer RPC
// (Bus.Publish), so a burst of publishes costs each peer a few frames, not
// one per message. The body of an older sender is a single envelope (a
// msgpack map), which decodeBusFrame reads too.

// maxBusBatch bounds the messages' bytes in one frame; a message larger
// than this travels alone.
const maxBusBatch = 64 << 10

// errBusFrame is wrapped by every error of decodeBusFrame.
var errBusFrame = errors.New("malformed bus frame")

// appendBusMsg appends one message of a frame body.
func appendBusMsg(dst []byte, topic string, seq uint64, payload []byte) []byte {
	dst = appendMsgpackStr(dst, topic)
	dst = appendMsgpackUint(dst, seq)
	return appendMsgpackBin(dst, payload)
}

// busFrameBody is the body of a frame of n messages encoded by appendBusMsg
// into msgs.
func busFrameBody(inc uint64, msgs []byte, n int) []byte {
	elems := 1 + 3*n
	out := make([]byte, 0, 5+9+len(msgs))
	switch {
	case elems < 16:
		out = append(out, 0x90|byte(elems))
	case elems <= math.MaxUint16:
		out = binary.BigEndian.AppendUint16(append(out, 0xdc), uint16(elems))
	default:
		out = binary.BigEndian.AppendUint32(append(out, 0xdd), uint32(elems))
	}
	out = appendMsgpackUint(out, inc)
	return append(out, msgs...)
}

// decodeBusFrame reads a frame body: a batch, or an older sender's single
// envelope. Payloads alias body. Any other input is an error wrapping
// errBusFrame, never a panic.
func decodeBusFrame(body []byte) ([]envelope, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty", errBusFrame)
	}
	if c := body[0]; c&0xf0 == 0x80 || c == 0xde || c == 0xdf {
		var env envelope
		if err := msgpack.Unmarshal(body, &env); err != nil {
			return nil, fmt.Errorf("%w: %v", errBusFrame, err)
		}
		return []envelope{env}, nil
	}
	d := mpDecoder{buf: body}
	elems := d.arrayLen()
	if d.err == nil && (elems < 4 || (elems-1)%3 != 0) {
		return nil, fmt.Errorf("%w: an array of %d elements, want 1+3k (k ≥ 1)", errBusFrame, elems)
	}
	inc := d.uint("incarnation")
	n := (elems - 1) / 3
	// Every message takes at least 3 bytes: a lying count allocates
	// nothing beyond what the body can hold.
	out := make([]envelope, 0, min(n, len(body)/3))
	for i := 0; i < n && d.err == nil; i++ {
		env := envelope{Inc: inc}
		env.Topic = d.str("topic")
		env.Seq = d.uint("seq")
		env.Payload = d.bin("payload")
		out = append(out, env)
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(body) {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBusFrame, len(body)-d.off)
	}
	return out, nil
}

func appendMsgpackUint(dst []byte, v uint64) []byte {
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

func appendMsgpackStr(dst []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

func appendMsgpackBin(dst []byte, b []byte) []byte {
	switch n := len(b); {
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

// mpDecoder reads the msgpack values of a bus frame, recording the first
// error.
type mpDecoder struct {
	buf []byte
	off int
	err error
}

func (d *mpDecoder) need(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.buf)-d.off < n {
		d.err = fmt.Errorf("%w: %s: need %d bytes, have %d", errBusFrame, what, n, len(d.buf)-d.off)
		return nil
	}
	b := d.buf[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

// length reads a big-endian length of size bytes (1, 2 or 4).
func (d *mpDecoder) length(size int, what string) int {
	b := d.need(size, what)
	switch {
	case b == nil:
		return 0
	case size == 1:
		return int(b[0])
	case size == 2:
		return int(binary.BigEndian.Uint16(b))
	}
	return int(binary.BigEndian.Uint32(b))
}

func (d *mpDecoder) arrayLen() int {
	t := d.need(1, "array header")
	if t == nil {
		return 0
	}
	switch c := t[0]; {
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		return d.length(2, "array header")
	case c == 0xdd:
		return d.length(4, "array header")
	default:
		d.err = fmt.Errorf("%w: expected an array or a map, found byte 0x%02x", errBusFrame, c)
	}
	return 0
}

func (d *mpDecoder) uint(what string) uint64 {
	t := d.need(1, what)
	if t == nil {
		return 0
	}
	switch c := t[0]; {
	case c < 0x80:
		return uint64(c)
	case c == 0xcc:
		return uint64(d.length(1, what))
	case c == 0xcd:
		return uint64(d.length(2, what))
	case c == 0xce:
		if b := d.need(4, what); b != nil {
			return uint64(binary.BigEndian.Uint32(b))
		}
	case c == 0xcf:
		if b := d.need(8, what); b != nil {
			return binary.BigEndian.Uint64(b)
		}
	default:
		d.err = fmt.Errorf("%w: %s: expected an unsigned integer, found byte 0x%02x", errBusFrame, what, c)
	}
	return 0
}

func (d *mpDecoder) str(what string) string {
	t := d.need(1, what)
	if t == nil {
		return ""
	}
	var n int
	switch c := t[0]; {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9:
		n = d.length(1, what)
	case c == 0xda:
		n = d.length(2, what)
	case c == 0xdb:
		n = d.length(4, what)
	default:
		d.err = fmt.Errorf("%w: %s: expected a string, found byte 0x%02x", errBusFrame, what, c)
		return ""
	}
	return string(d.need(n, what))
}

func (d *mpDecoder) bin(what string) []byte {
	t := d.need(1, what)
	if t == nil {
		return nil
	}
	var n int
	switch t[0] {
	case 0xc0:
		return nil
	case 0xc4:
		n = d.length(1, what)
	case 0xc5:
		n = d.length(2, what)
	case 0xc6:
		n = d.length(4, what)
	default:
		d.err = fmt.Errorf("%w: %s: expected binary data or nil, found byte 0x%02x", errBusFrame, what, t[0])
		return nil
	}
	b := d.need(n, what)
	if len(b) == 0 {
		return nil
	}
	return b
}
