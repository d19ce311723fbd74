package rest

import "testing"

func TestLoneSurrogate(t *testing.T) {
	for body, want := range map[string]bool{
		`{"text":"plain"}`:                  false,
		`{"text":"\u00e9\n\\u"}`:            false,
		`{"text":"\ud83d\ude00"}`:           false, // a pair: 😀
		`{"text":"\\udc00"}`:                false, // an escaped backslash, then text
		`{"text":"\udc00"}`:                 true,
		`{"text":"\ud83d"}`:                 true,
		`{"text":"\ud83dx\ude00"}`:          true,
		`{"text":"\ud83d\u0041"}`:           true,
		`{"a":"\ud83d\ude00","b":"\uDFFF"}`: true,
		`"\ud83`:                            false, // malformed: json refuses it
	} {
		if got := loneSurrogate([]byte(body)); got != want {
			t.Errorf("loneSurrogate(%s) = %v, want %v", body, got, want)
		}
	}
}
