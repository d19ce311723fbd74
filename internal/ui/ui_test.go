package ui_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/server"
	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

// node starts a one-node cluster with an administrator (root) and a user
// (bob), sampling every 200 ms.
func node(t testing.TB) *server.Server {
	t.Helper()
	cfg := server.DefaultNodeConfig(server.PresetLoopback)
	cfg.Cluster.Name, cfg.Cluster.BindAddr = "solo", "127.0.0.1:0"
	cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", t.TempDir()
	cfg.Store.BootstrapExpect = 1
	cfg.UI.Interval = 200 * time.Millisecond
	cfg.DB.BcryptCost = bcrypt.MinCost // a password check in well under a second under -race on a loaded machine
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	deadline := time.Now().Add(30 * time.Second)
	for s.Store().Status().Role != "leader" {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx := context.Background()
	for _, u := range []domain.NewUser{
		{Name: "root", DisplayName: "Root", Email: "root@example.com", Password: "root-password", Admin: true},
		{Name: "bob", DisplayName: "Bob", Email: "bob@example.com", Password: "bob-password"},
	} {
		if _, err := s.DB().CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// browser is an HTTP client with cookies that does not follow redirects.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
	csrf string
}

func newBrowser(t testing.TB, s *server.Server) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: "http://" + s.HTTPAddr(), c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func tokenIn(t testing.TB, html string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%.2000s", html)
	}
	return m[1]
}

// login logs in through the form and keeps the page's CSRF token.
func (b *browser) login(user, pass string) {
	b.t.Helper()
	_, page := b.do("GET", "/ui/login", nil)
	resp, body := b.do("POST", "/ui/login", url.Values{"csrf": {tokenIn(b.t, page)}, "username": {user}, "password": {pass}, "next": {"/ui/jobs"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/jobs" {
		b.t.Fatalf("login as %s: %s %s\n%.1000s", user, resp.Status, resp.Header.Get("Location"), body)
	}
	_, page = b.do("GET", "/ui/cluster", nil)
	b.csrf = tokenIn(b.t, page)
}

func TestLoginSessionCookieAndPages(t *testing.T) {
	s := node(t)
	b := newBrowser(t, s)
	resp, _ := b.do("GET", "/ui/caches", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2Fcaches" {
		t.Fatalf("anonymous page: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	resp, page := b.do("GET", "/ui/login", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `<form class="login"`) {
		t.Fatalf("login form: %s", resp.Status)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("CSP: %q", csp)
	}
	token := tokenIn(t, page)
	// A wrong password, a missing token, a token from elsewhere.
	for _, tc := range []struct {
		form url.Values
		want int
		msg  string
	}{
		{url.Values{"csrf": {"TOKEN"}, "username": {"root"}, "password": {"wrong"}}, 401, "Invalid username or password"},
		{url.Values{"csrf": {"TOKEN"}, "username": {"nobody"}, "password": {"x"}}, 401, "Invalid username or password"},
		{url.Values{"username": {"root"}, "password": {"root-password"}}, 403, "login form expired"},
		{url.Values{"csrf": {"forged"}, "username": {"root"}, "password": {"root-password"}}, 403, "login form expired"},
	} {
		if tc.form.Get("csrf") == "TOKEN" {
			tc.form.Set("csrf", token)
		}
		resp, body := b.do("POST", "/ui/login", tc.form)
		if resp.StatusCode != tc.want || !strings.Contains(body, tc.msg) {
			t.Errorf("login %v: %s, want %d with %q", tc.form, resp.Status, tc.want, tc.msg)
		}
		for _, c := range resp.Cookies() {
			if c.Name == "shoal_ui_solo" {
				t.Errorf("login %v set a session cookie", tc.form)
			}
		}
		token = tokenIn(t, body) // each answer has a fresh form
	}
	resp, _ = b.do("POST", "/ui/login", url.Values{"csrf": {token}, "username": {"root"}, "password": {"root-password"}, "next": {"https://evil.example/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/cluster" {
		t.Fatalf("login: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "shoal_ui_solo" {
			sc = c
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Secure || sc.Path != "/ui/" {
		t.Fatalf("session cookie: %+v", sc)
	}
	// The node registers its built-in jobs (and so writes scheduler/ keys
	// to the store) after it starts serving: wait for them before the
	// pages that show them, which the loop visits in no set order.
	testkit.Eventually(t, 30*time.Second, "the built-in jobs on /ui/jobs", func() bool {
		_, body := b.do("GET", "/ui/jobs", nil)
		return strings.Contains(body, `data-job="packcache-sweep"`)
	})
	for path, want := range map[string][]string{
		"/ui/cluster":    {`data-member="solo"`, `data-state="alive"`, "leader", "Timeline"},
		"/ui/partitions": {"Table epoch", `class="pgrid"`},
		"/ui/caches":     {"By node", `data-node="solo"`, "Hits per second", "<svg"},
		"/ui/git":        {"Pack cache", "upload", "Requests in flight"},
		"/ui/jobs":       {`data-job="cluster-stats"`, `data-job="packcache-sweep"`, "Pause", "Run now"},
		"/ui/store":      {"(all keys)", "scheduler/"},
	} {
		resp, body := b.do("GET", path, nil)
		if resp.StatusCode != 200 {
			t.Errorf("%s: %s", path, resp.Status)
			continue
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q", path, w)
			}
		}
		if !strings.Contains(body, `<a href="/ui/`+strings.TrimPrefix(path, "/ui/")+`" aria-current="page">`) {
			t.Errorf("%s: the navigation does not mark it current", path)
		}
	}
	// The partition grid has the table's 271 partitions once the table
	// exists.
	waitFor(t, "a partition table", func() bool {
		_, body := b.do("GET", "/ui/partitions", nil)
		return strings.Count(body, `class="p m0`) == 271
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestActionsNeedCSRFAndAnAdministrator(t *testing.T) {
	s := node(t)
	ctx := context.Background()
	admin, bob := newBrowser(t, s), newBrowser(t, s)
	admin.login("root", "root-password")
	bob.login("bob", "bob-password")
	paused := func() bool {
		st, err := s.Scheduler().Job(ctx, "cluster-stats")
		if err != nil {
			t.Fatal(err)
		}
		return st.Paused
	}
	waitFor(t, "the built-in job", func() bool { _, err := s.Scheduler().Job(ctx, "cluster-stats"); return err == nil })
	const pause = "/ui/jobs/cluster-stats/pause"
	for _, tc := range []struct {
		b    *browser
		form url.Values
		want int
	}{
		{admin, url.Values{}, 403},
		{admin, url.Values{"csrf": {"forged"}}, 403},
		{admin, url.Values{"csrf": {bob.csrf}}, 403},
		{bob, url.Values{"csrf": {bob.csrf}}, 403},
		{newBrowser(t, s), url.Values{"csrf": {admin.csrf}}, 401},
	} {
		if resp, _ := tc.b.do("POST", pause, tc.form); resp.StatusCode != tc.want {
			t.Errorf("pause with %v: %s, want %d", tc.form, resp.Status, tc.want)
		}
	}
	if paused() {
		t.Fatal("a refused request paused the job")
	}
	resp, _ := admin.do("POST", pause, url.Values{"csrf": {admin.csrf}})
	if resp.StatusCode != http.StatusSeeOther || !paused() {
		t.Fatalf("pause: %s, paused %v", resp.Status, paused())
	}
	_, body := admin.do("GET", resp.Header.Get("Location"), nil)
	if !strings.Contains(body, `Job &#34;cluster-stats&#34; paused.`) || !strings.Contains(body, `id="resume-cluster-stats"`) {
		t.Fatalf("after the pause the page shows:\n%.3000s", body)
	}
	if resp, _ := admin.do("POST", "/ui/jobs/cluster-stats/resume", url.Values{"csrf": {admin.csrf}}); resp.StatusCode != http.StatusSeeOther || paused() {
		t.Fatalf("resume: %s, paused %v", resp.Status, paused())
	}
	if resp, _ := admin.do("POST", "/ui/jobs/no-such-job/pause", url.Values{"csrf": {admin.csrf}}); resp.StatusCode != 404 {
		t.Fatalf("unknown job: %s", resp.Status)
	}
	// A cross-site form post is refused even with the token.
	req, _ := http.NewRequest("POST", admin.base+pause, strings.NewReader(url.Values{"csrf": {admin.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := admin.c.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("cross-origin post: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Bob reads pages but not the store.
	if resp, _ := bob.do("GET", "/ui/jobs", nil); resp.StatusCode != 200 {
		t.Fatalf("bob's jobs page: %s", resp.Status)
	}
	if resp, _ := bob.do("GET", "/ui/store", nil); resp.StatusCode != 403 {
		t.Fatalf("bob's store page: %s", resp.Status)
	}
	// Logout ends the session.
	if resp, _ := bob.do("POST", "/ui/logout", url.Values{"csrf": {bob.csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %s", resp.Status)
	}
	if resp, _ := bob.do("GET", "/ui/jobs", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after logout: %s", resp.Status)
	}
}

func TestStoreBrowserEscapes(t *testing.T) {
	s := node(t)
	ctx := context.Background()
	evil := `<img src=x onerror=alert("x")>`
	if _, err := s.Store().Put(ctx, "app/"+evil, []byte(evil+"\nsecond line")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store().Put(ctx, "app/bin", []byte{0, 1, 2, 0xff}); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, s)
	b.login("root", "root-password")
	_, body := b.do("GET", "/ui/store?prefix=app/", nil)
	if strings.Contains(body, "<img") || strings.Count(body, "&lt;img src=x onerror=alert(&#34;x&#34;)&gt;") != 2 {
		t.Fatalf("the store page does not escape keys and values:\n%s", body)
	}
	_, body = b.do("GET", "/ui/store?key="+url.QueryEscape("app/bin"), nil)
	if !strings.Contains(body, "00000000  00 01 02 ff") {
		t.Fatalf("binary value:\n%s", body)
	}
	_, body = b.do("GET", "/ui/store", nil)
	if !strings.Contains(body, `href="/ui/store?prefix=app%2F"`) {
		t.Fatalf("the root does not fold app/:\n%s", body)
	}
}

// sse reads Server-Sent Events.
type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

func (b *browser) events(page string) *sse {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.base+"/ui/events?page="+page, nil)
	c := *b.c
	c.Timeout = 0
	resp, err := c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		b.t.Fatalf("events: %s", resp.Status)
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event's name and data.
func (s *sse) next() (string, string, error) {
	var name string
	var data []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if name != "" || data != nil {
				return name, strings.Join(data, "\n"), nil
			}
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
}

func TestEventsStreamUpdatesAndEndAtShutdown(t *testing.T) {
	s := node(t)
	b := newBrowser(t, s)
	if resp, _ := b.do("GET", "/ui/events?page=cluster", nil); resp.StatusCode != 401 {
		t.Fatalf("events without a session: %s", resp.Status)
	}
	b.login("bob", "bob-password")
	if resp, _ := b.do("GET", "/ui/events?page=store", nil); resp.StatusCode != 400 {
		t.Fatalf("events of a page without them: %s", resp.Status)
	}
	ev := b.events("cluster")
	seen := 0
	for seen < 3 {
		name, data, err := ev.next()
		if err != nil {
			t.Fatal(err)
		}
		if name != "update" || !strings.Contains(data, `data-member="solo"`) {
			t.Fatalf("event %q: %.500s", name, data)
		}
		if strings.Contains(data, "127.0.0.1") {
			t.Fatal("a user's stream shows addresses")
		}
		seen++
	}
	// Shutdown ends the stream; it does not wait for the browser.
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	for {
		if _, _, err := ev.next(); err != nil {
			break
		}
	}
	// A stream that held the HTTP server would make Shutdown wait for its
	// context (20 s) and fail.
	if err := <-done; err != nil {
		t.Fatalf("shutdown with a stream open: %v (after %v)", err, time.Since(start))
	}
}

// The static handler serves its files and nothing else: a directory, a
// missing file, a name fs.FS refuses (not UTF-8, "..") are 404 in the
// error shape, never a listing, a redirect or a 500 (the file server
// answered "ap%ff.css" 500 and "static/" with a listing).
func TestStaticServesOnlyItsFiles(t *testing.T) {
	s := node(t)
	b := newBrowser(t, s)
	for _, p := range []string{"/ui/static/app.js", "/ui/static/style.css"} {
		resp, body := b.do("GET", p, nil)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %s (%d bytes)", p, resp.Status, len(body))
		}
	}
	for _, p := range []string{"/ui/static/", "/ui/static/missing.css", "/ui/static/ap%ff.css", "/ui/static/%2e%2e/ui.go",
		"/ui/static/app.js/", "/ui/static/%00"} {
		resp, body := b.do("GET", p, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
			!strings.Contains(body, `"errors"`) {
			t.Errorf("GET %s: %s %q %.300q, want 404 in the error shape", p, resp.Status, resp.Header.Get("Content-Type"), body)
		}
	}
}
