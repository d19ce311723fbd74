package pktline

import "testing"

func TestRequestRefused(t *testing.T) {
	for stderr, want := range map[string]string{
		"fatal: invalid command 'evil'\n":                                           "invalid command 'evil'",
		"fatal: unexpected line: 'bogus-arg'":                                       "unexpected line: 'bogus-arg'",
		"warning: x\nfatal: mismatched object format: server sha1; client sha256\n": "mismatched object format: server sha1; client sha256",
		"fatal: the remote end hung up unexpectedly":                                "",
		"fatal: not a git repository: '/srv/x.git'":                                 "",
		"error: object file is empty":                                               "",
		"":                                                                          "",
	} {
		msg, refused := RequestRefused([]byte(stderr))
		if msg != want || refused != (want != "") {
			t.Errorf("%q: %q %v, want %q", stderr, msg, refused, want)
		}
	}
}
