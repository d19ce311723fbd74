package resp

import (
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
)

// out is a connection's reply buffer and the protocol it speaks: RESP2
// or, after HELLO 3, RESP3. The RESP2 encodings are redcon's; RESP3 adds
// maps, sets, nulls, doubles and pushes.
type out struct {
	b     []byte
	resp3 bool
}

func (o *out) ok()                 { o.b = append(o.b, "+OK\r\n"...) }
func (o *out) simple(s string)     { o.b = redcon.AppendString(o.b, s) }
func (o *out) bulk(v []byte)       { o.b = redcon.AppendBulk(o.b, v) }
func (o *out) bulkString(s string) { o.b = redcon.AppendBulkString(o.b, s) }
func (o *out) int(n int64)         { o.b = redcon.AppendInt(o.b, n) }
func (o *out) array(n int)         { o.b = redcon.AppendArray(o.b, n) }

// err writes an error reply: text is the whole message, its code first
// ("ERR ...", "WRONGTYPE ..."); line breaks become spaces.
func (o *out) err(text string) {
	if strings.ContainsAny(text, "\r\n") {
		text = strings.NewReplacer("\r", " ", "\n", " ").Replace(text)
	}
	o.b = append(o.b, '-')
	o.b = append(o.b, text...)
	o.b = append(o.b, '\r', '\n')
}

// null is a missing value: RESP2's null bulk string, RESP3's null.
func (o *out) null() {
	if o.resp3 {
		o.b = append(o.b, "_\r\n"...)
	} else {
		o.b = append(o.b, "$-1\r\n"...)
	}
}

// nullArray is RESP2's null array (a missing multi-bulk), RESP3's null.
func (o *out) nullArray() {
	if o.resp3 {
		o.b = append(o.b, "_\r\n"...)
	} else {
		o.b = append(o.b, "*-1\r\n"...)
	}
}

// mapHeader starts a map of n pairs: RESP3's map, RESP2's flat array.
func (o *out) mapHeader(n int) {
	if o.resp3 {
		o.b = append(o.b, '%')
		o.b = strconv.AppendInt(o.b, int64(n), 10)
		o.b = append(o.b, '\r', '\n')
	} else {
		o.array(2 * n)
	}
}

// setHeader starts a set: RESP3's set, RESP2's array.
func (o *out) setHeader(n int) {
	if o.resp3 {
		o.b = append(o.b, '~')
		o.b = strconv.AppendInt(o.b, int64(n), 10)
		o.b = append(o.b, '\r', '\n')
	} else {
		o.array(n)
	}
}

// pushHeader starts an out-of-band message: RESP3's push, RESP2's array
// (pub/sub messages).
func (o *out) pushHeader(n int) {
	if o.resp3 {
		o.b = append(o.b, '>')
		o.b = strconv.AppendInt(o.b, int64(n), 10)
		o.b = append(o.b, '\r', '\n')
	} else {
		o.array(n)
	}
}

// verbatim is a text reply (INFO, CLUSTER NODES): RESP3's verbatim
// string, RESP2's bulk string.
func (o *out) verbatim(s string) {
	if !o.resp3 {
		o.bulkString(s)
		return
	}
	o.b = append(o.b, '=')
	o.b = strconv.AppendInt(o.b, int64(len(s)+4), 10)
	o.b = append(o.b, "\r\ntxt:"...)
	o.b = append(o.b, s...)
	o.b = append(o.b, '\r', '\n')
}

// strings writes an array of bulk strings.
func (o *out) strings(ss []string) {
	o.array(len(ss))
	for _, s := range ss {
		o.bulkString(s)
	}
}
