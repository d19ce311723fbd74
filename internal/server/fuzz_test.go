package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// The HTTP fuzz run over every route of a node: the seed corpus
// (testdata/httpfuzz/seeds.jsonl, one request a line: who sends it, the
// method, the request target, the Content-Type and the body) covers each
// route — /v1/*, /debug/pprof, REST, git, the dashboard, the open ones —
// and TestHTTPFuzzAllRoutes sends a few thousand mutations of it (a
// fixed PRNG seed, SHOAL_FUZZ_SEED to choose another; bounded by
// SHOAL_FUZZ_REQUESTS and 30 s) to one real node; FuzzHTTPRoutes is the
// same check under 'go test -fuzz' ('make fuzz'). Every answer must be:
//
//   - an answer (no connection dropped, nothing left hanging);
//   - below 500, or a 503 (the documented "retry later": database, raft
//     leader, a full pool, draining);
//   - for a 4xx or 503, the one error shape {"errors":[{"message":…}]}
//     (JSON), except where the README says otherwise: git paths answer
//     text/plain (what git shows), dashboard pages HTML, /readyz its
//     status, /debug/pprof Go's own, and net/http's own refusal of a
//     malformed request ("400 Bad Request", before any route);
//   - free of the database's and the runtime's words (SQL, "panic", a
//     source file) that the request did not itself carry.
//
// Afterwards the node answers /healthz, and its log holds no panic.

// fuzzRequest is one request of the corpus.
type fuzzRequest struct {
	// Who: "" anonymous, "user", "admin" (Bearer tokens), "bad" (Basic
	// with a wrong password, sent from 127.0.0.2 so that the login guard
	// does not throttle the others), "garbage" (Basic, not base64), "ui"
	// (an administrator's dashboard session cookie; "{csrf}" in the body
	// is its CSRF token).
	Who    string `json:"who"`
	Method string `json:"method"`
	Target string `json:"target"`
	CT     string `json:"ct,omitempty"`
	Body   string `json:"body,omitempty"`
}

func (r fuzzRequest) String() string {
	return fmt.Sprintf("%s %.300q as %q (%q, %d bytes: %.200q)", r.Method, r.Target, r.Who, r.CT, len(r.Body), r.Body)
}

func loadFuzzSeeds(t testing.TB) []fuzzRequest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "httpfuzz", "seeds.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var seeds []fuzzRequest
	for i, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r fuzzRequest
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("seeds.jsonl line %d: %v", i+1, err)
		}
		seeds = append(seeds, r)
	}
	if len(seeds) < 50 {
		t.Fatalf("only %d seeds", len(seeds))
	}
	return seeds
}

// fuzzNode is the node under fuzzing, with the credentials of each Who.
type fuzzNode struct {
	addr string
	auth map[string]string
	logs *testkit.SyncBuffer
	// cookie and csrf are the dashboard session's (Who "ui").
	cookie, csrf string
}

// startFuzzNode starts a node with a public repository PUB/open (a git
// repository with a pull request), a private one PRIV/secret, an
// administrator and a user.
func startFuzzNode(t testing.TB) *fuzzNode {
	logs := &testkit.SyncBuffer{}
	s := singleWith(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.Git.MaxRequestBytes = 1 << 20
		c.DB.BcryptCost = bcrypt.MinCost // the routes are fuzzed, not bcrypt: cheap wrong passwords
	})
	ctx := context.Background()
	db := s.DB()
	admin, user := userToken(t, s, "root", true), userToken(t, s, "bob", false)
	if _, err := db.CreateUser(ctx, domain.NewUser{Name: "alice", Password: "alice-password"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []domain.Project{{Key: "PUB", Name: "Public"}, {Key: "PRIV", Name: "Private"}} {
		if _, err := db.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	open, err := db.CreateRepository(ctx, "PUB", domain.NewRepository{Name: "open", Slug: "open", Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateRepository(ctx, "PRIV", domain.NewRepository{Name: "secret", Slug: "secret"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]string{{"PUB", "open"}, {"PRIV", "secret"}} {
		if err := gitfront.InitBare(ctx, s.cfg.Git.ReposDir, r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	root, err := db.UserByName(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := db.CreatePullRequest(ctx, domain.NewPullRequest{RepositoryID: open.ID, Title: "t", FromBranch: "a", ToBranch: "main", AuthorID: root.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateComment(ctx, pr.ID, root.ID, "first"); err != nil {
		t.Fatal(err)
	}
	n := &fuzzNode{addr: s.HTTPAddr(), logs: logs, auth: map[string]string{
		"admin":   "Bearer " + admin,
		"user":    "Bearer " + user,
		"bad":     "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wrong-password")),
		"garbage": "Basic %%%not-base64",
	}}
	n.cookie, n.csrf = uiLogin(t, n.addr, "root", admin)
	return n
}

// fuzzCSRF is a form's CSRF token in a dashboard page.
var fuzzCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// uiLogin logs in to the dashboard at addr through its form and returns
// the session's cookie ("name=value") and CSRF token.
func uiLogin(t testing.TB, addr, user, pass string) (cookie, csrf string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	base := "http://" + addr
	page := func(resp *http.Response, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := fuzzCSRF.FindSubmatch(b)
		if resp.StatusCode != http.StatusOK || m == nil {
			t.Fatalf("dashboard login: %s %s: %.500s", resp.Request.URL, resp.Status, b)
		}
		return string(m[1])
	}
	token := page(c.Get(base + "/ui/login"))
	csrf = page(c.PostForm(base+"/ui/login", url.Values{"csrf": {token}, "username": {user}, "password": {pass}, "next": {"/ui/jobs"}}))
	u, _ := url.Parse(base + "/ui/cluster") // the login form's cookie is gone, and only for /ui/login
	cookies := jar.Cookies(u)
	if len(cookies) != 1 {
		t.Fatalf("after the dashboard login, cookies %v, want the session's", cookies)
	}
	return cookies[0].Name + "=" + cookies[0].Value, csrf
}

// fuzzAnswer is what the node answered.
type fuzzAnswer struct {
	status int
	header http.Header
	body   []byte
}

// send sends r on a connection of its own, as written (the target is put
// on the request line as it is), and reads the answer.
func (n *fuzzNode) send(r fuzzRequest) (fuzzAnswer, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if r.Who == "bad" {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
	}
	conn, err := d.Dial("tcp", n.addr)
	if err != nil {
		return fuzzAnswer{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nUser-Agent: shoal-fuzz\r\n", r.Method, r.Target)
	if a := n.auth[r.Who]; a != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", a)
	}
	payload := r.Body
	if r.Who == "ui" {
		fmt.Fprintf(&b, "Cookie: %s\r\n", n.cookie)
		payload = strings.ReplaceAll(payload, "{csrf}", n.csrf)
	}
	if r.CT != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", r.CT)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(payload), payload)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return fuzzAnswer{}, fmt.Errorf("sending: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: r.Method})
	if err != nil {
		return fuzzAnswer{}, fmt.Errorf("no answer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// The dashboard's live updates: a stream that does not end; its
		// first event is the answer.
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		first, err := bufio.NewReader(resp.Body).ReadString('\n')
		conn.Close() // before the body's Close, which would wait for the stream's end
		if err != nil {
			err = fmt.Errorf("no first event: %w", err)
		}
		return fuzzAnswer{status: resp.StatusCode, header: resp.Header, body: []byte(first)}, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil && resp.StatusCode < 300 {
		err = nil // a long answer cut by the deadline is not a failure of the node's
	}
	return fuzzAnswer{status: resp.StatusCode, header: resp.Header, body: body}, err
}

// fuzzLeaks are words of the database's and the runtime's own.
var fuzzLeaks = []string{"UNIQUE", "constraint", "sql:", "SQLITE", "sqlite", "goroutine", "panic", ".go:", "no rows in result"}

// check says what is wrong with a's answer to r, "" if nothing.
func checkFuzzAnswer(r fuzzRequest, a fuzzAnswer) string {
	path, _, _ := strings.Cut(r.Target, "?")
	if a.status >= 500 && a.status != http.StatusServiceUnavailable {
		return fmt.Sprintf("status %d: %.300s", a.status, a.body)
	}
	for _, w := range fuzzLeaks {
		if bytes.Contains(a.body, []byte(w)) && !strings.Contains(r.Target+r.Body, w) &&
			!strings.HasPrefix(path, "/debug/pprof") && a.status >= 400 {
			return fmt.Sprintf("status %d says %q: %.300s", a.status, w, a.body)
		}
	}
	if a.status < 400 || r.Method == http.MethodHead {
		return ""
	}
	ct := a.header.Get("Content-Type")
	switch {
	case a.status == http.StatusBadRequest && string(a.body) == "400 Bad Request":
		return "" // net/http's own refusal of a malformed request (request line, header), before any route
	case strings.HasPrefix(path, "/scm/"):
		if !strings.HasPrefix(ct, "text/plain") || len(bytes.TrimSpace(a.body)) == 0 {
			return fmt.Sprintf("git path: status %d, %q %.300q, want a text/plain message", a.status, ct, a.body)
		}
		return ""
	case strings.HasPrefix(path, "/ui/") && !strings.HasPrefix(path, "/ui/events") && strings.HasPrefix(ct, "text/html"),
		path == "/readyz" && a.status == http.StatusServiceUnavailable,
		strings.HasPrefix(path, "/debug/pprof/") && a.status != http.StatusUnauthorized && a.status != http.StatusForbidden:
		return ""
	}
	var e struct {
		Errors []struct {
			Message *string `json:"message"`
		} `json:"errors"`
	}
	if !strings.HasPrefix(ct, "application/json") || json.Unmarshal(a.body, &e) != nil ||
		len(e.Errors) == 0 || e.Errors[0].Message == nil || *e.Errors[0].Message == "" {
		return fmt.Sprintf("status %d %q %.300q is not the error shape", a.status, ct, a.body)
	}
	return ""
}

// safe keeps a request from what would make the run slow or end its
// dashboard session without telling anything: a CPU profile, a trace or
// a delta profile of N seconds (an administrator's, asked for) is sent
// anonymously, and so is a logout in the session.
func (r fuzzRequest) safe() fuzzRequest {
	slow := strings.Contains(r.Target, "pprof") &&
		(strings.Contains(r.Target, "profile") || strings.Contains(r.Target, "trace") || strings.Contains(r.Target, "seconds"))
	if (slow && r.Who == "admin") || (r.Who == "ui" && strings.Contains(strings.ToLower(r.Target), "logout")) {
		r.Who = ""
	}
	return r
}

var (
	fuzzMethods = []string{"GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "get", "PROPFIND", "X"}
	fuzzWho     = []string{"", "user", "admin", "admin", "bad", "garbage", "ui"}
	fuzzCTs     = []string{"", "application/json", "application/json; charset=latin1", "application/x-www-form-urlencoded",
		"application/x-git-upload-pack-request", "application/x-git-receive-pack-request", "text/plain", "multipart/form-data; boundary=x",
		"application/octet-stream", ";;", "application/json; x=\"unterminated"}
	fuzzSegments = []string{"", ".", "..", "%2e%2e", "%00", "%ff", "a%2Fb", "%", "%zz", "-1", "0", "1", "99999999999999999999999",
		"{id}", "<script>alert(1)</script>", "'", "\"", "NaN", "\u00e9\u00e8", "\U0001F642", "x y", "a\\b", "PUB", "PRIV", "open",
		"secret", "open.git", "secret.git", "info", "refs", "git-upload-pack", "git-receive-pack", "projects", "repos",
		"pull-requests", "comments", "1", "2", "l2", "scheduler", "jobs", "cluster-stats", "stats", "app", "packcache", "v1",
		"kv", "rest", "api", "1.0", "scm", "ui", "events", "install", "use", "remove", "run-now", "pause", "resume", "peers", "solo",
		strings.Repeat("x", 300), strings.Repeat("%41", 200)}
	fuzzQueryKeys   = []string{"limit", "start", "at", "state", "prefix", "stale", "cas", "version", "service", "page", "order", "seconds", "debug", "x"}
	fuzzQueryValues = []string{"", "-1", "0", "1", "1000000", "1e99", "99999999999999999999", "true", "false", "yes", "%", "%zz",
		"git-upload-pack", "git-receive-pack", "ALL", "OPEN", "MERGED", "app/", "cluster", "NEWEST", "\u00e9", "a&b=c", "..", strings.Repeat("9", 400)}
	fuzzBodies = []string{"", "{}", "[]", "null", "0", "\"\"", "{\"version\":-1}", "{\"version\":1e400}", "{\"text\":\"\\ud800\"}",
		"{\"key\":\"" + strings.Repeat("A", 5000) + "\"}", "{\"mode\":\"near\"}", "{\"mode\":\"distributed\"}", "{\"name\":\"" + strings.Repeat("\u00e9", 300) + "\"}",
		strings.Repeat("[", 10000), strings.Repeat("{\"a\":", 2000), "\xff\xfe\x00", "0000", "0009done\n0000", "0032want 1111111111111111111111111111111111111111\n0000",
		"0014command=ls-refs\n0000", "0016object-format=sha256\n0000", "ffff", "zzzz", "0004", "0001", "PACK\x00\x00\x00\x02\x00\x00\x00\x00",
		"username=root&password=x&csrf=", "username=" + strings.Repeat("x", 2000), "csrf=%zz&next=//evil.example", "csrf={csrf}", "{\"runner\":\"kv.record-run\",\"schedule\":{\"kind\":\"interval\",\"every\":\"1ms\"}}",
		"{\"runner\":\"nope\",\"schedule\":{\"kind\":\"cron\",\"expr\":\"* * * * * * *\"}}", "{\"key\":\"DUP\",\"name\":\"\"}", "{\"key\":\"" + strings.Repeat("K", 200) + "\",\"name\":\"n\"}"}
)

// mutate changes r in one to three ways, at random.
func mutate(rng *rand.Rand, r fuzzRequest) fuzzRequest {
	pick := func(list []string) string { return list[rng.IntN(len(list))] }
	for range 1 + rng.IntN(3) {
		path, query, _ := strings.Cut(r.Target, "?")
		switch rng.IntN(10) {
		case 0, 1: // a path segment replaced, added or dropped
			segs := strings.Split(path, "/")
			i := 1 + rng.IntN(max(1, len(segs)-1))
			switch rng.IntN(3) {
			case 0:
				if i < len(segs) {
					segs[i] = pick(fuzzSegments)
				}
			case 1:
				segs = append(segs[:i], append([]string{pick(fuzzSegments)}, segs[i:]...)...)
			default:
				if i < len(segs) && len(segs) > 2 {
					segs = append(segs[:i], segs[i+1:]...)
				}
			}
			path = strings.Join(segs, "/")
		case 2: // a byte of the path changed
			if len(path) > 1 {
				b := []byte(path)
				const chars = "/.%?#;&=+ \x00\x7f\xffaZ09~"
				b[1+rng.IntN(len(b)-1)] = chars[rng.IntN(len(chars))]
				path = string(b)
			}
		case 3: // a query parameter added or the query replaced
			kv := pick(fuzzQueryKeys) + "=" + pick(fuzzQueryValues)
			if query == "" || rng.IntN(2) == 0 {
				query = kv
			} else {
				query += "&" + kv
			}
		case 4:
			r.Method = pick(fuzzMethods)
		case 5:
			r.Who = pick(fuzzWho)
		case 6:
			r.CT = pick(fuzzCTs)
		case 7: // the body replaced
			r.Body = pick(fuzzBodies)
		case 8: // the body's bytes changed, cut or doubled
			b := []byte(r.Body)
			switch {
			case len(b) == 0:
				b = []byte(pick(fuzzBodies))
			case rng.IntN(3) == 0:
				b = b[:rng.IntN(len(b))]
			case rng.IntN(3) == 0:
				b = append(b, b...)
			default:
				for range 1 + rng.IntN(4) {
					b[rng.IntN(len(b))] = byte(rng.IntN(256))
				}
			}
			r.Body = string(b)
		default: // a JSON value inside the body replaced
			if i := strings.IndexAny(r.Body, ":["); i >= 0 {
				v := []string{"null", "-1", "1e999", "\"\"", "[]", "{}", "true", "\"\\u0000\"", "18446744073709551616", "\"" + strings.Repeat("z", 1000) + "\""}
				j := i + 1
				for j < len(r.Body) && !strings.ContainsRune(",}]", rune(r.Body[j])) {
					j++
				}
				r.Body = r.Body[:i+1] + v[rng.IntN(len(v))] + r.Body[j:]
			}
		}
		if path == "" || path[0] != '/' {
			path = "/" + path
		}
		r.Target = path
		if query != "" {
			r.Target += "?" + query
		}
	}
	// A space or a line break on the request line makes a different
	// request (net/http refuses most); keep them rare.
	if rng.IntN(8) != 0 {
		r.Target = strings.NewReplacer(" ", "%20", "\r", "%0D", "\n", "%0A", "\t", "%09").Replace(r.Target)
	}
	return r.safe()
}

// validTarget reports whether target is one net/http takes on a request
// line: no control byte, no space, a URL (no malformed escape).
func validTarget(target string) bool {
	for i := range len(target) {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	_, err := url.ParseRequestURI(target)
	return err == nil
}

// checkAfterFuzz checks that the node still answers and logged no panic.
func (n *fuzzNode) checkAfterFuzz(t testing.TB) {
	t.Helper()
	a, err := n.send(fuzzRequest{Method: "GET", Target: "/healthz"})
	if err != nil || a.status != http.StatusOK {
		t.Errorf("/healthz after the fuzzing: %d %v", a.status, err)
	}
	// The dashboard session lasted: its pages were fuzzed logged in.
	a, err = n.send(fuzzRequest{Who: "ui", Method: "GET", Target: "/ui/jobs"})
	if err != nil || a.status != http.StatusOK || !bytes.Contains(a.body, []byte(n.csrf)) {
		t.Errorf("the dashboard session after the fuzzing: %d %v %.300q", a.status, err, a.body)
	}
	logs := n.logs.String()
	for l := range strings.Lines(logs) {
		if strings.Contains(l, "panic") || strings.Contains(l, "level=ERROR") {
			t.Errorf("logged: %.600s", l)
		}
	}
}

// fuzzFor bounds the mutated requests' time in TestHTTPFuzzAllRoutes.
const fuzzFor = 30 * time.Second

// A few thousand mutated requests over every route: see the top of the
// file. Bounded by SHOAL_FUZZ_REQUESTS (default 3,000) and fuzzFor, six at
// a time (on a machine loaded past its cores, fewer get sent: the count
// is logged, and at least 200 must be).
func TestHTTPFuzzAllRoutes(t *testing.T) {
	seeds := loadFuzzSeeds(t)
	n := startFuzzNode(t)
	total := 3000
	if v, err := strconv.Atoi(os.Getenv("SHOAL_FUZZ_REQUESTS")); err == nil && v > 0 {
		total = v
	}
	seed := uint64(17)
	if v, err := strconv.ParseUint(os.Getenv("SHOAL_FUZZ_SEED"), 10, 64); err == nil {
		seed = v
	}
	// The seeds as they are, first: each route answered as it should.
	start := time.Now()
	var seedsWG sync.WaitGroup
	for w := range 6 {
		seedsWG.Go(func() {
			for i := w; i < len(seeds); i += 6 {
				r := seeds[i]
				began := time.Now()
				a, err := n.send(r.safe())
				if d := time.Since(began); d > 5*time.Second {
					t.Logf("seed %v took %v", r, d)
				}
				if err == nil {
					if msg := checkFuzzAnswer(r, a); msg != "" {
						err = fmt.Errorf("%s", msg)
					}
				}
				if err != nil {
					t.Errorf("seed %v: %v", r, err)
				}
			}
		})
	}
	seedsWG.Wait()
	t.Logf("%d seeds answered in %v", len(seeds), time.Since(start))
	deadline := time.Now().Add(fuzzFor)
	var sent, failed atomic.Int64
	var statuses sync.Map    // status -> *atomic.Int64
	var unavailable sync.Map // the 503s' bodies, logged once each
	var wg sync.WaitGroup
	for w := range 6 {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for time.Now().Before(deadline) && sent.Add(1) <= int64(total) {
				r := mutate(rng, seeds[rng.IntN(len(seeds))])
				a, err := n.send(r)
				if err != nil && !validTarget(r.Target) {
					err = nil // net/http refuses the request line and closes: the body sent after it meets a reset
				}
				if err == nil {
					c, _ := statuses.LoadOrStore(a.status, new(atomic.Int64))
					c.(*atomic.Int64).Add(1)
					if msg := checkFuzzAnswer(r, a); msg != "" {
						err = fmt.Errorf("%s", msg)
					}
					if a.status == http.StatusServiceUnavailable {
						if _, seen := unavailable.LoadOrStore(string(a.body), true); !seen {
							t.Logf("503 for %v: %s", r, a.body)
						}
					}
				}
				if err != nil && failed.Add(1) <= 20 {
					t.Errorf("%v: %v", r, err)
				}
			}
		})
	}
	wg.Wait()
	done := min(sent.Load(), int64(total))
	var counts []string
	statuses.Range(func(k, v any) bool {
		counts = append(counts, fmt.Sprintf("%d×%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%d mutated requests (PRNG seed %d; %d failed): %v", done, seed, failed.Load(), counts)
	if done < 200 {
		t.Errorf("only %d requests in the time: the run says little", done)
	}
	n.checkAfterFuzz(t)
}

// FuzzHTTPRoutes is TestHTTPFuzzAllRoutes's check under 'go test -fuzz'
// (make fuzz): the fuzzer mutates the seeds' fields itself; crashers
// land in testdata/fuzz/FuzzHTTPRoutes.
func FuzzHTTPRoutes(f *testing.F) {
	whos := []string{"", "user", "admin", "bad", "garbage", "ui"}
	for _, r := range loadFuzzSeeds(f) {
		who := uint8(0)
		for i, w := range whos {
			if w == r.Who {
				who = uint8(i)
			}
		}
		f.Add(who, r.Method, r.Target, r.CT, []byte(r.Body))
	}
	n := startFuzzNode(f)
	f.Fuzz(func(t *testing.T, who uint8, method, target, ct string, body []byte) {
		r := fuzzRequest{Who: whos[int(who)%len(whos)], Method: method, Target: target, CT: ct, Body: string(body)}
		// What cannot be a request line or a header is not a request.
		if method == "" || strings.ContainsAny(method, " \r\n\x00") || strings.ContainsAny(ct, "\r\n") ||
			strings.ContainsAny(target, " \r\n") || !strings.HasPrefix(target, "/") {
			t.Skip()
		}
		r = r.safe()
		a, err := n.send(r)
		if err != nil && !validTarget(r.Target) {
			return // refused by net/http, the connection closed
		}
		if err != nil {
			t.Fatalf("%v: %v", r, err)
		}
		if msg := checkFuzzAnswer(r, a); msg != "" {
			t.Fatalf("%v: %s", r, msg)
		}
	})
}
