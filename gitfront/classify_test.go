package gitfront

import (
	"net/http/httptest"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, target, ct, ua string
		want                   PoolName
	}{
		{"GET", "/scm/p/r.git/info/refs?service=git-upload-pack", "", "git/2.39.5", PoolUpload},
		{"GET", "/scm/p/r.git/info/refs?service=git-upload-pack", "", "curl/8", PoolUpload},
		{"GET", "/scm/p/r.git/info/refs?service=git-receive-pack", "", "git/2.39.5", PoolReceive},
		{"POST", "/scm/p/r.git/git-upload-pack", uploadCT, "git/2.39.5", PoolUpload},
		{"POST", "/scm/p/r.git/git-receive-pack", receiveCT, "git/2.39.5", PoolReceive},
		{"POST", "/elsewhere", receiveCT, "", PoolReceive},
		{"POST", "/elsewhere", uploadCT, "", PoolUpload},
		{"GET", "/scm/p/r.git/HEAD", "", "git/2.39.5", PoolUpload},
		{"GET", "/rest/api/1.0/projects", "", "git/2.39.5", PoolUpload},
		{"GET", "/rest/api/1.0/projects", "", "curl/8", PoolWeb},
		{"GET", "/rest/api/1.0/projects?service=git-receive-pack", "", "", PoolWeb},
		{"POST", "/rest/api/1.0/projects/p/repos", "application/json", "Mozilla/5.0", PoolWeb},
		{"GET", "/", "", "", PoolWeb},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		if tc.ct != "" {
			r.Header.Set("Content-Type", tc.ct)
		}
		r.Header.Set("User-Agent", tc.ua)
		if got := Classify(r); got != tc.want {
			t.Errorf("%s %s ct=%q ua=%q: %s, want %s", tc.method, tc.target, tc.ct, tc.ua, got, tc.want)
		}
	}
}
