package gitfront

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A web path with empty, "." or ".." segments is 400 with a JSON message,
// not the ServeMux's redirect to another resource. (Git paths are left to
// the git handler's own checks: abuse_test.go.)
func TestFrontRefusesUncleanWebPaths(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	f, err := New(Config{Web: mux, Authenticator: AuthenticatorFuncs{}})
	if err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]int{
		"/rest/api/1.0/projects":                     http.StatusTeapot,
		"/rest/api/1.0/projects/":                    http.StatusTeapot,
		"/rest/api/1.0/projects/P/repos/%2e%2e/x":    http.StatusTeapot, // the API judges its own segments
		"/rest/api/1.0/projects/P/repos/a/../../etc": http.StatusBadRequest,
		"/rest/api/1.0/projects/P/repos/./a":         http.StatusBadRequest,
		"/rest/api/1.0//projects":                    http.StatusBadRequest,
		"/v1/kv/a/../b":                              http.StatusBadRequest,
	} {
		r := httptest.NewRequest(http.MethodPost, target, strings.NewReader("{}"))
		w := httptest.NewRecorder()
		f.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("%s: %d, want %d", target, w.Code, want)
		}
		if want == http.StatusBadRequest && !strings.Contains(w.Body.String(), "segments") {
			t.Errorf("%s: %q is not the JSON error", target, w.Body.String())
		}
	}
}
