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

// jsonObject appends the fields of one object: field writes the key and
// the separator before it.
type jsonObject struct {
	b     []byte
	first bool
}

func openObject(dst []byte) jsonObject { return jsonObject{b: append(dst, '{'), first: true} }

func (o *jsonObject) field(name string) {
	if !o.first {
		o.b = append(o.b, ',')
	}
	o.first = false
	o.b = append(o.b, '"')
	o.b = append(o.b, name...) // field names are plain ASCII
	o.b = append(o.b, '"', ':')
}

func (o *jsonObject) str(name, v string) {
	o.field(name)
	o.b = appendJSONString(o.b, v)
}

func (o *jsonObject) int(name string, v int64) {
	o.field(name)
	o.b = strconv.AppendInt(o.b, v, 10)
}

func (o *jsonObject) bool(name string, v bool) {
	o.field(name)
	o.b = strconv.AppendBool(o.b, v)
}

func (o *jsonObject) close() []byte { return append(o.b, '}') }

func (u userJSON) appendJSON(dst []byte) []byte {
	o := openObject(dst)
	o.str("name", u.Name)
	o.str("emailAddress", u.EmailAddress)
	o.int("id", u.ID)
	o.str("displayName", u.DisplayName)
	o.bool("active", u.Active)
	o.str("slug", u.Slug)
	o.str("type", u.Type)
	return o.close()
}

func (r refJSON) appendJSON(dst []byte) []byte {
	o := openObject(dst)
	o.str("id", r.ID)
	o.str("displayId", r.DisplayID)
	o.field("repository")
	repo := openObject(o.b)
	repo.str("slug", r.Repository.Slug)
	repo.field("project")
	project := openObject(repo.b)
	project.str("key", r.Repository.Project.Key)
	repo.b = project.close()
	o.b = repo.close()
	return o.close()
}

func (p participantJSON) appendJSON(dst []byte) []byte {
	o := openObject(dst)
	o.field("user")
	o.b = p.User.appendJSON(o.b) // called directly: an interface would box the struct
	o.str("role", p.Role)
	return o.close()
}

func (p pullRequestJSON) appendJSON(dst []byte) []byte {
	o := openObject(dst)
	o.int("id", p.ID)
	o.int("version", p.Version)
	o.str("title", p.Title)
	o.str("description", p.Description)
	o.str("state", string(p.State))
	o.bool("open", p.Open)
	o.bool("closed", p.Closed)
	o.int("createdDate", p.CreatedDate)
	o.int("updatedDate", p.UpdatedDate)
	o.field("fromRef")
	o.b = p.FromRef.appendJSON(o.b) // called directly: an interface would box the struct
	o.field("toRef")
	o.b = p.ToRef.appendJSON(o.b) // called directly: an interface would box the struct
	o.field("author")
	o.b = p.Author.appendJSON(o.b) // called directly: an interface would box the struct
	return o.close()
}
