package rest

import (
	"errors"
	"net/http"
	"testing"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/internal/domain"
)

// The request decoders never panic, and whatever they accept obeys the
// rules the handlers rely on; whatever they refuse is a 400 with a message.
func FuzzDecodeBodies(f *testing.F) {
	for _, s := range []string{`{"version": 0, "title": "x", "state": "merged"}`, `{"text": "hi"}`,
		`{"name": "Repo", "slug": "repo", "public": true, "scmId": "git"}`, `{"version": -1}`, `{"version": 1e400}`,
		`{"title": null, "version": 3}`, `[]`, `null`, `{"text": "\ud800"}`, `{"version": 0}{}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var u updatePullRequestBody
		if err := refused(t, decodeJSON(body, &u)); err == nil {
			if upd, err := u.update(); refused(t, err) == nil {
				if upd.Version < 0 || upd.State != nil && validState(*upd.State) != nil {
					t.Fatalf("accepted %+v from %q", upd, body)
				}
			}
		}
		var c createCommentBody
		refused(t, decodeJSON(body, &c))
		var r createRepositoryBody
		if refused(t, decodeJSON(body, &r)) == nil && utf8.Valid(body) && !utf8.ValidString(r.Name) {
			t.Fatalf("valid UTF-8 body %q gave an invalid name %q", body, r.Name)
		}
	})
}

// refused checks that a decoding error is a 400 with a message.
func refused(t *testing.T, err error) error {
	var he *httpError
	if err != nil && (!errors.As(err, &he) || he.status != http.StatusBadRequest || he.msg == "") {
		t.Fatalf("refusal %v is not a 400 with a message", err)
	}
	return err
}

func validState(s domain.State) error {
	_, err := domain.ParseState(string(s))
	return err
}
