package l2cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The owner protocol's two messages are on the hot path of every
// DISTRIBUTED get, so they are encoded by hand instead of by reflection:
// each is a msgpack array of fixed length (any msgpack reader can still
// read them), written with append and read with a bounds-checked cursor.
// Decoding never panics and never allocates more than the input's length;
// decoded byte slices alias the input, so a caller that keeps one copies
// it (the rpc layer hands each handler a body of its own).

// ErrCodec is wrapped by every decoding error of the owner protocol.
var ErrCodec = errors.New("l2cache: malformed owner message")

const (
	opFields    = 12
	replyFields = 9
	// maxSpaces bounds the query spaces one message may name.
	maxSpaces = 1024
)

func appendOp(b []byte, o *distOp) []byte {
	b = append(b, 0x90|opFields)
	b = appendUint(b, uint64(o.Kind))
	b = appendBool(b, o.Near)
	b = appendUint(b, uint64(o.Partition))
	b = appendStr(b, o.Region)
	b = appendStr(b, o.Key)
	b = appendBin(b, o.Value)
	b = appendSpacesNamed(b, o.Spaces, o.Upd, o.Want, o.Need)
	b = appendStr(b, o.Ticket.Owner)
	b = appendUint(b, o.Ticket.Stamp)
	b = appendUint(b, o.Stamp)
	b = appendUint(b, o.Seq)
	return appendUint(b, o.Epoch)
}

func decodeOp(b []byte) (distOp, error) {
	d := decoder{b: b}
	var o distOp
	d.header(opFields)
	o.Kind = ownerKind(d.uint(math.MaxUint8))
	o.Near = d.bool()
	o.Partition = int(d.uint(math.MaxInt32))
	o.Region, o.Key = d.str(), d.str()
	o.Value = d.bin()
	o.Spaces, o.Upd, o.Want, o.Need = d.spacesNamed()
	o.Ticket.Owner, o.Ticket.Stamp = d.str(), d.uint(math.MaxUint64)
	o.Stamp, o.Seq, o.Epoch = d.uint(math.MaxUint64), d.uint(math.MaxUint64), d.uint(math.MaxUint64)
	return o, d.end()
}

func appendReply(b []byte, r *distReply) []byte {
	switch {
	case r.Vouched:
		// An eleventh, only in the answer to a get whose reader would
		// keep it (distOp.Want), from a node that reads names.
		b = append(b, 0x90|(replyFields+2))
	case len(r.SpacesAt) > 0:
		// A tenth field, only in the answer to a change that carried a
		// query-space update (which only a node that reads it sends).
		b = append(b, 0x90|(replyFields+1))
	default:
		b = append(b, 0x90|replyFields)
	}
	b = appendBool(b, r.NotOwner)
	b = appendUint(b, r.Epoch)
	b = appendBool(b, r.Hit)
	b = appendBin(b, r.Value)
	b = appendStr(b, r.Ticket.Owner)
	b = appendUint(b, r.Ticket.Stamp)
	b = appendUint(b, r.Floor)
	b = appendBool(b, r.Refused)
	b = appendBool(b, r.Unavailable)
	if len(r.SpacesAt) > 0 || r.Vouched {
		b = appendArrayHeader(b, len(r.SpacesAt))
		for _, m := range r.SpacesAt {
			b = appendStr(b, m)
		}
	}
	if r.Vouched {
		b = appendBool(b, true)
	}
	return b
}

func decodeReply(b []byte) (distReply, error) {
	d := decoder{b: b}
	var r distReply
	fields := replyFields
	if len(b) > 0 && (b[0] == 0x90|(replyFields+1) || b[0] == 0x90|(replyFields+2)) {
		fields = int(b[0] & 0x0f) // SpacesAt, and Vouched
	}
	d.header(fields)
	r.NotOwner, r.Epoch, r.Hit = d.bool(), d.uint(math.MaxUint64), d.bool()
	r.Value = d.bin()
	r.Ticket.Owner, r.Ticket.Stamp = d.str(), d.uint(math.MaxUint64)
	r.Floor, r.Refused, r.Unavailable = d.uint(math.MaxUint64), d.bool(), d.bool()
	if fields > replyFields {
		n := d.array(maxSpaces)
		r.SpacesAt = make([]string, 0, n)
		for range n {
			r.SpacesAt = append(r.SpacesAt, d.str())
		}
		if n == 0 {
			r.SpacesAt = nil
		}
	}
	if fields > replyFields+1 {
		r.Vouched = d.bool()
	}
	if r.Hit && r.Value == nil {
		r.Value = []byte{} // a cached empty value is still a hit
	}
	return r, d.end()
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 0x80:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// appendBin writes v as bin, and nil as msgpack nil.
func appendBin(b []byte, v []byte) []byte {
	n := len(v)
	switch {
	case v == nil:
		return append(b, 0xc0)
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, v...)
}

func appendArrayHeader(b []byte, n int) []byte {
	if n < 16 {
		return append(b, 0x90|byte(n))
	}
	if n <= math.MaxUint16 {
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
}

// decoder reads the subset of msgpack the owner protocol writes. The first
// error sticks: later reads return zero values, and end reports it.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", ErrCodec, d.off, fmt.Sprintf(format, args...))
	}
}

// take returns the next n bytes, or nil (and an error) if there are fewer.
func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.fail("needs %d bytes, %d left", n, len(d.b)-d.off)
		return nil
	}
	s := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return s
}

func (d *decoder) byte1() byte {
	if s := d.take(1); s != nil {
		return s[0]
	}
	return 0
}

// length reads a big-endian length of size bytes.
func (d *decoder) length(size int) int {
	s := d.take(size)
	switch {
	case s == nil:
		return 0
	case size == 1:
		return int(s[0])
	case size == 2:
		return int(binary.BigEndian.Uint16(s))
	}
	return int(binary.BigEndian.Uint32(s))
}

func (d *decoder) header(fields int) {
	if c := d.byte1(); d.err == nil && c != 0x90|byte(fields) {
		d.fail("expected an array of %d fields, found type byte %#x", fields, c)
	}
}

func (d *decoder) bool() bool {
	switch c := d.byte1(); {
	case d.err != nil:
	case c == 0xc3:
		return true
	case c != 0xc2:
		d.fail("expected a bool, found type byte %#x", c)
	}
	return false
}

func (d *decoder) uint(limit uint64) uint64 {
	c := d.byte1()
	var v uint64
	switch {
	case d.err != nil:
		return 0
	case c < 0x80:
		v = uint64(c)
	case c == 0xcc:
		v = uint64(d.length(1))
	case c == 0xcd:
		v = uint64(d.length(2))
	case c == 0xce:
		v = uint64(d.length(4))
	case c == 0xcf:
		if s := d.take(8); s != nil {
			v = binary.BigEndian.Uint64(s)
		}
	default:
		d.fail("expected an unsigned integer, found type byte %#x", c)
	}
	if v > limit {
		d.fail("integer %d exceeds %d", v, limit)
		return 0
	}
	return v
}

// sized reads the length that follows type byte c when c is one of a
// family's consecutive codes (msgpack numbers its 8-, 16- and 32-bit
// length variants in a row, starting at first, with these length sizes).
func (d *decoder) sized(c, first byte, sizes ...int) (int, bool) {
	if c < first || int(c-first) >= len(sizes) {
		return 0, false
	}
	return d.length(sizes[c-first]), true
}

func (d *decoder) str() string {
	c := d.byte1()
	if d.err != nil {
		return ""
	}
	if c&0xe0 == 0xa0 {
		return string(d.take(int(c & 0x1f)))
	}
	n, ok := d.sized(c, 0xd9, 1, 2, 4)
	if !ok {
		d.fail("expected a string, found type byte %#x", c)
	}
	return string(d.take(n))
}

func (d *decoder) bin() []byte {
	c := d.byte1()
	if d.err != nil || c == 0xc0 {
		return nil
	}
	n, ok := d.sized(c, 0xc4, 1, 2, 4)
	if !ok {
		d.fail("expected bytes, found type byte %#x", c)
		return nil
	}
	return d.take(n)
}

func (d *decoder) array(limit int) int {
	c := d.byte1()
	if d.err != nil {
		return 0
	}
	n, ok := int(c&0x0f), c&0xf0 == 0x90
	if !ok {
		if n, ok = d.sized(c, 0xdc, 2, 4); !ok {
			d.fail("expected an array, found type byte %#x", c)
			return 0
		}
	}
	// Every element takes at least one byte: a count beyond what is left
	// is a lie, refused before allocating for it.
	if n > limit || n > len(d.b)-d.off {
		d.fail("array of %d elements (limit %d, %d bytes left)", n, limit, len(d.b)-d.off)
		return 0
	}
	return n
}

func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}
