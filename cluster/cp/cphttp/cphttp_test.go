package cphttp_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/clustertest"
	"github.com/shoal-dev/shoal/cluster/cp/cphttp"
	"github.com/shoal-dev/shoal/cluster/memnet"
	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

// served is a store member with the routes on a test server; the caller
// is who the X-Who header says: "admin", "user" or nobody.
type served struct {
	name string
	srv  *httptest.Server
	m    *clustertest.Member
}

func serve(t *testing.T, n int) []*served {
	t.Helper()
	net := memnet.New(1)
	t.Cleanup(func() { net.Close() })
	members := clustertest.StartWithStores(t, net, n)
	out := make([]*served, n)
	for i, m := range members {
		out[i] = &served{name: m.Node.Name(), m: m}
	}
	for _, s := range out {
		mux := http.NewServeMux()
		cphttp.Register(mux, cphttp.Config{Store: s.m.Store, Self: s.name, SystemPrefixes: []string{"sys/"},
			LeaderHTTP: func(name string) string {
				for _, o := range out {
					if o.name == name {
						return strings.TrimPrefix(o.srv.URL, "http://")
					}
				}
				return ""
			},
			Caller: func(r *http.Request) (bool, bool) {
				who := r.Header.Get("X-Who")
				return who != "", who == "admin"
			}})
		s.srv = httptest.NewServer(mux)
		t.Cleanup(s.srv.Close)
	}
	return out
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

func (a answer) field(name string) any {
	var m map[string]any
	json.Unmarshal(a.body, &m)
	return m[name]
}

// message is the error body's first message, nil if there is none: the
// one shape of the node's errors, {"errors":[{"message": …}]}.
func (a answer) message() any {
	var e struct {
		Errors []struct{ Message *string }
	}
	if json.Unmarshal(a.body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Message == nil {
		return nil
	}
	return *e.Errors[0].Message
}

func do(t *testing.T, c *http.Client, method, url, who string, body []byte) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if who != "" {
		req.Header.Set("X-Who", who)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// The key/value routes map the store's errors onto statuses and write
// nothing they refuse.
func TestKVRoutes(t *testing.T) {
	s := serve(t, 1)[0]
	base := s.srv.URL
	c := http.DefaultClient
	if a := do(t, c, "PUT", base+"/v1/kv/a/b", "admin", []byte("hello")); a.code != 200 || a.field("version") == nil {
		t.Fatalf("put: %d %s", a.code, a.body)
	}
	a := do(t, c, "GET", base+"/v1/kv/a/b", "admin", nil)
	if a.code != 200 || a.field("value") != "hello" || a.field("key") != "a/b" {
		t.Fatalf("get: %d %s", a.code, a.body)
	}
	v := a.field("version").(float64)
	if a := do(t, c, "PUT", base+"/v1/kv/bin", "admin", []byte{0xff, 0}); a.code != 200 {
		t.Fatalf("binary put: %d", a.code)
	}
	if a := do(t, c, "GET", base+"/v1/kv/bin?stale", "admin", nil); a.field("value_base64") != "/wA=" || a.field("value") != nil {
		t.Fatalf("binary value: %s", a.body)
	}
	for _, tc := range []struct {
		method, path, body string
		want               int
		msg                string
	}{
		{"GET", "/v1/kv/missing", "", 404, "not found"},
		{"PUT", "/v1/kv/a/b?cas=1", "x", 409, "version mismatch"},
		{"PUT", "/v1/kv/a/b?cas=abc", "x", 400, "not a version number"},
		{"GET", "/v1/kv/a/b?stale=maybe", "", 400, "not true or false"},
		{"GET", "/v1/kv?stale=maybe", "", 400, "not true or false"},
		{"PUT", "/v1/kv/" + strings.Repeat("k", 2000), "x", 413, "exceeds the limit"},
		{"PUT", "/v1/kv/huge", strings.Repeat("v", 9<<20), 413, "request body"},
		{"DELETE", "/v1/kv/a/b?version=1", "", 409, "version mismatch"},
		{"DELETE", "/v1/kv/a/b?version=x", "", 400, "not a version number"},
	} {
		a := do(t, c, tc.method, base+tc.path, "admin", []byte(tc.body))
		msg, _ := a.message().(string)
		if a.code != tc.want || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %.40s: %d %q, want %d with %q", tc.method, tc.path, a.code, msg, tc.want, tc.msg)
		}
	}
	if list := s.m.Store.StaleList("a/"); len(list) != 1 {
		t.Fatalf("rejected requests wrote something: %v", list)
	}
	if a := do(t, c, "PUT", base+"/v1/kv/a/b?cas="+strconv.FormatFloat(v, 'f', 0, 64), "admin", []byte("new")); a.code != 200 {
		t.Fatalf("cas with the right version: %d %s", a.code, a.body)
	}
	var list []cphttp.KVView
	if a := do(t, c, "GET", base+"/v1/kv?prefix=a/", "admin", nil); a.code != 200 || json.Unmarshal(a.body, &list) != nil ||
		len(list) != 1 || list[0].Value != "new" {
		t.Fatalf("list: %d %s", a.code, a.body)
	}
	if a := do(t, c, "DELETE", base+"/v1/kv/a/b", "admin", nil); a.code != 200 || a.field("deleted") != "a/b" {
		t.Fatalf("delete: %d %s", a.code, a.body)
	}
}

// Every key/value route needs an administrator (401 anonymous, 403 for
// another user) and writes nothing it refuses; the system's prefixes are
// read-only, for administrators too.
func TestKVNeedsAnAdministrator(t *testing.T) {
	s := serve(t, 1)[0]
	base := s.srv.URL
	c := http.DefaultClient
	if a := do(t, c, "PUT", base+"/v1/kv/a/b", "admin", []byte("1")); a.code != 200 {
		t.Fatalf("put: %d %s", a.code, a.body)
	}
	if _, err := s.m.Store.Put(t.Context(), "sys/x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	routes := []struct{ method, path string }{{"GET", "/v1/kv?prefix="}, {"GET", "/v1/kv/a/b"}, {"GET", "/v1/kv/a/b?stale"},
		{"PUT", "/v1/kv/a/b"}, {"PUT", "/v1/kv/a/b?cas=1"}, {"PUT", "/v1/kv/a/c"}, {"DELETE", "/v1/kv/a/b"}, {"PUT", "/v1/kv/sys/x"}}
	for who, want := range map[string]int{"": 401, "user": 403} {
		for _, r := range routes {
			a := do(t, c, r.method, base+r.path, who, []byte("2"))
			if a.code != want || a.message() == nil {
				t.Errorf("%s %s as %q: %d %s, want %d", r.method, r.path, who, a.code, a.body, want)
			}
			if want == 401 && a.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", r.method, r.path)
			}
		}
	}
	for _, r := range []struct{ method, path string }{{"PUT", "/v1/kv/sys/x"}, {"PUT", "/v1/kv/sys/new"}, {"PUT", "/v1/kv/sys/x?cas=1"}, {"DELETE", "/v1/kv/sys/x"}} {
		a := do(t, c, r.method, base+r.path, "admin", []byte("2"))
		if msg, _ := a.message().(string); a.code != 403 || !strings.Contains(msg, "read-only") {
			t.Errorf("an administrator's %s %s: %d %s", r.method, r.path, a.code, a.body)
		}
	}
	if a := do(t, c, "GET", base+"/v1/kv/sys/x", "admin", nil); a.code != 200 || a.field("value") != "1" {
		t.Fatalf("an administrator reading sys/x: %d %s", a.code, a.body)
	}
	list := s.m.Store.StaleList("")
	if len(list) != 2 || list[0].Key != "a/b" || string(list[0].Value) != "1" || list[1].Key != "sys/x" || string(list[1].Value) != "1" {
		t.Fatalf("refused requests wrote: %v", list)
	}
}

// The operators' routes need an administrator; a follower sends what
// only the leader does to the leader, and a snapshot saved there restores.
func TestOperatorRoutes(t *testing.T) {
	nodes := serve(t, 2)
	var leader, follower *served
	testkit.Eventually(t, 10*time.Second, "a leader", func() bool {
		for i, n := range nodes {
			if n.m.Store.Status().Role == "leader" {
				leader, follower = n, nodes[1-i]
				return true
			}
		}
		return false
	})
	c := http.DefaultClient
	for who, want := range map[string]int{"": 401, "user": 403, "admin": 200} {
		if a := do(t, c, "GET", follower.srv.URL+"/v1/raft/peers", who, nil); a.code != want {
			t.Errorf("peers as %q: %d, want %d", who, a.code, want)
		}
	}
	if a := do(t, c, "GET", leader.srv.URL+"/v1/snapshot", "", nil); a.code != 401 || a.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("anonymous snapshot: %d %v", a.code, a.header)
	}
	do(t, c, "PUT", follower.srv.URL+"/v1/kv/k", "admin", []byte("v1"))
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	a := do(t, noFollow, "GET", follower.srv.URL+"/v1/snapshot", "admin", nil)
	if a.code != 307 || a.header.Get("Location") != leader.srv.URL+"/v1/snapshot" {
		t.Fatalf("a follower's snapshot: %d to %q, want 307 to the leader", a.code, a.header.Get("Location"))
	}
	snap := do(t, c, "GET", follower.srv.URL+"/v1/snapshot", "admin", nil)
	if snap.code != 200 || snap.header.Get("X-Shoal-Snapshot-Keys") != "1" || len(snap.body) == 0 {
		t.Fatalf("snapshot through the redirect: %d %v", snap.code, snap.header)
	}
	do(t, c, "PUT", leader.srv.URL+"/v1/kv/k", "admin", []byte("v2"))
	if a := do(t, c, "PUT", leader.srv.URL+"/v1/snapshot", "admin", snap.body); a.code != 200 {
		t.Fatalf("restore: %d %s", a.code, a.body)
	}
	if a := do(t, c, "GET", leader.srv.URL+"/v1/kv/k", "admin", nil); a.field("value") != "v1" {
		t.Fatalf("after the restore k is %s", a.body)
	}
	if a := do(t, c, "PUT", leader.srv.URL+"/v1/snapshot", "admin", []byte("not a snapshot")); a.code != 400 {
		t.Fatalf("a damaged snapshot: %d %s", a.code, a.body)
	}
	if a := do(t, c, "DELETE", leader.srv.URL+"/v1/raft/peers/"+follower.name, "admin", nil); a.code != 409 {
		t.Fatalf("removing a live peer: %d %s", a.code, a.body)
	}
}
