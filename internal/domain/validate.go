package domain

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// ValidProjectKey reports whether key is a project key: a letter, then up
// to 127 letters, digits or underscores.
func ValidProjectKey(key string) bool {
	if len(key) == 0 || len(key) > 128 || !isLetter(key[0]) {
		return false
	}
	for i := 1; i < len(key); i++ {
		if c := key[i]; !isLetter(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

// ValidSlug reports whether slug names a repository: 1 to 128 of
// [a-z0-9._-], starting with a letter or digit, with no "..", not ending
// in ".git" or ".lock". A slug becomes a directory name (slug.git), so
// nothing in it may climb out of one or collide with git's own names.
func ValidSlug(slug string) bool {
	if len(slug) == 0 || len(slug) > 128 || !(isLower(slug[0]) || isDigit(slug[0])) || strings.Contains(slug, "..") ||
		strings.HasSuffix(slug, ".git") || strings.HasSuffix(slug, ".lock") {
		return false
	}
	for i := 1; i < len(slug); i++ {
		if c := slug[i]; !isLower(c) && !isDigit(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ValidUserName reports whether name can name a user: 1 to 64 of
// [A-Za-z0-9._-@], starting with a letter or digit.
func ValidUserName(name string) bool {
	if len(name) == 0 || len(name) > 64 || !(isLetter(name[0]) || isDigit(name[0])) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isLetter(c) && !isDigit(c) && !strings.ContainsRune("._-@", rune(c)) {
			return false
		}
	}
	return true
}

// Slugify derives a slug from a repository name: lower case, runs of other
// characters become one '-'.
func Slugify(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		c := byte(r)
		if r < utf8.RuneSelf && (isLower(c) || isDigit(c) || c == '_' || c == '.') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteByte(c)
			dash = false
			continue
		}
		dash = true
	}
	s := strings.Trim(strings.ReplaceAll(b.String(), "..", "."), ".-_")
	s = strings.TrimSuffix(strings.TrimSuffix(s[:min(len(s), 128)], ".git"), ".lock")
	return strings.Trim(s, ".-_")
}

// checkText refuses empty (when required), over-long or non-UTF-8 text.
func checkText(field, s string, required bool, maxLen int) error {
	switch {
	case required && strings.TrimSpace(s) == "":
		return fmt.Errorf("%w: %s is required", ErrInvalid, field)
	case len(s) > maxLen:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalid, field, maxLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, field)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%w: %s contains a NUL character", ErrInvalid, field)
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isLower(c byte) bool  { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// ValidBranchName reports whether name is a branch name git accepts
// (git check-ref-format refs/heads/NAME), and does not start with '-':
// no control characters, spaces or any of ~^:?*[\, no "..", "//" or "@{",
// no component starting with '.' or ending in ".lock", not ending in '/'
// or '.', at most 255 bytes.
func ValidBranchName(name string) bool {
	if name == "" || len(name) > 255 || name[0] == '-' || strings.HasSuffix(name, "/") ||
		strings.HasSuffix(name, ".") || strings.Contains(name, "..") || strings.Contains(name, "//") || strings.Contains(name, "@{") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f || strings.IndexByte(" ~^:?*[\\", c) >= 0 {
			return false
		}
	}
	for _, comp := range strings.Split(name, "/") {
		if comp == "" || comp[0] == '.' || strings.HasSuffix(comp, ".lock") {
			return false
		}
	}
	return true
}
