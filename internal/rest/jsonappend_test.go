package rest

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/shoal-dev/shoal/internal/domain"
)

// encodingJSON is what writeJSON wrote before the hand-written encoders,
// and still writes for other shapes.
func encodingJSON(t testing.TB, v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// awkward strings: escapes, control characters, HTML, invalid UTF-8,
// U+2028/2029, multi-byte runes, empty.
var awkward = []string{"", "plain", `quote " backslash \ slash /`, "tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f",
	"<b>&amp;</b>", "bad \xff\xfe utf8 \xc3", "line\u2028para\u2029", "ünïcødé 日本 🐟", "\u00e9\x80end"}

func randString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return awkward[r.IntN(len(awkward))]
	}
	b := make([]byte, r.IntN(24))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		pr := pullRequestJSON{ID: r.Int64(), Version: r.Int64N(100) - 50, Title: randString(r), Description: randString(r),
			State: domain.State(randString(r)), Open: r.IntN(2) == 0, Closed: r.IntN(2) == 0,
			CreatedDate: r.Int64(), UpdatedDate: -r.Int64(),
			FromRef: ref(randString(r), domain.Repository{Slug: randString(r), ProjectKey: randString(r)}),
			ToRef:   ref(randString(r), domain.Repository{Slug: randString(r), ProjectKey: randString(r)}),
			Author: participantJSON{Role: randString(r), User: renderUser(domain.User{ID: r.Int64(), Name: randString(r),
				Email: randString(r), DisplayName: randString(r)})}}
		want := encodingJSON(t, pr)
		got := append(pr.appendJSON(nil), '\n')
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range awkward {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := bytes.TrimSuffix(encodingJSON(t, s), []byte("\n"))
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
		}
	})
}
