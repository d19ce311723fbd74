package rest

import (
	"strconv"
	"sync"
	"unicode/utf8"
)

// The hot JSON shapes are written by hand, appending to a pooled buffer,
// instead of through encoding/json's reflection: the output is byte for
// byte what json.Encoder with SetEscapeHTML(false) writes (checked by
// TestAppendJSONMatchesEncodingJSON and FuzzAppendJSONString).

// jsonAppender is a value that appends its own JSON encoding.
type jsonAppender interface {
	appendJSON(dst []byte) []byte
}

var jsonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it without HTML escaping: quotes, backslashes and control
// characters; invalid UTF-8 becomes U+FFFD; U+2028 and U+2029 are escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// The objects are written as runs of literal bytes (keys, quotes, colons
// and commas in one append) between the values, in encoding/json's field
// order.

func appendJSONBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

func (u userJSON) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, u.Name)
	dst = append(dst, `,"emailAddress":`...)
	dst = appendJSONString(dst, u.EmailAddress)
	dst = append(dst, `,"id":`...)
	dst = strconv.AppendInt(dst, u.ID, 10)
	dst = append(dst, `,"displayName":`...)
	dst = appendJSONString(dst, u.DisplayName)
	dst = append(dst, `,"active":`...)
	dst = appendJSONBool(dst, u.Active)
	dst = append(dst, `,"slug":`...)
	dst = appendJSONString(dst, u.Slug)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, u.Type)
	return append(dst, '}')
}

func (r refJSON) appendJSON(dst []byte) []byte {
	// "refs/heads/" needs no escaping: write it, then the branch's
	// escaped form without its opening quote.
	dst = append(dst, `{"id":"refs/heads/`...)
	n := len(dst)
	dst = appendJSONString(dst, r.DisplayID)
	dst = append(dst[:n], dst[n+1:]...)
	dst = append(dst, `,"displayId":`...)
	dst = appendJSONString(dst, r.DisplayID)
	dst = append(dst, `,"repository":{"slug":`...)
	dst = appendJSONString(dst, r.Repository.Slug)
	dst = append(dst, `,"project":{"key":`...)
	dst = appendJSONString(dst, r.Repository.Project.Key)
	return append(dst, "}}}"...)
}

func (p participantJSON) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"user":`...)
	dst = p.User.appendJSON(dst) // called directly: an interface would box the struct
	dst = append(dst, `,"role":`...)
	dst = appendJSONString(dst, p.Role)
	return append(dst, '}')
}

func (p pullRequestJSON) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, p.ID, 10)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, p.Version, 10)
	dst = append(dst, `,"title":`...)
	dst = appendJSONString(dst, p.Title)
	dst = append(dst, `,"description":`...)
	dst = appendJSONString(dst, p.Description)
	dst = append(dst, `,"state":`...)
	dst = appendJSONString(dst, string(p.State))
	dst = append(dst, `,"open":`...)
	dst = appendJSONBool(dst, p.Open)
	dst = append(dst, `,"closed":`...)
	dst = appendJSONBool(dst, p.Closed)
	dst = append(dst, `,"createdDate":`...)
	dst = strconv.AppendInt(dst, p.CreatedDate, 10)
	dst = append(dst, `,"updatedDate":`...)
	dst = strconv.AppendInt(dst, p.UpdatedDate, 10)
	dst = append(dst, `,"fromRef":`...)
	dst = p.FromRef.appendJSON(dst) // called directly: an interface would box the struct
	dst = append(dst, `,"toRef":`...)
	dst = p.ToRef.appendJSON(dst)
	dst = append(dst, `,"author":`...)
	dst = p.Author.appendJSON(dst)
	return append(dst, '}')
}
