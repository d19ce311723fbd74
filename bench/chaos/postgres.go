package chaos

import (
	"strconv"
	"strings"
)

// rebind turns a query's '?' placeholders into PostgreSQL's $1, $2, ...
// (the checker's queries have no '?' in strings).
func rebind(postgres bool, q string) string {
	if !postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
