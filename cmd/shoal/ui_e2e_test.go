package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-dev/shoal/internal/localcluster"
)

// The dashboard in a real browser: headless Chromium (Debian's chromium;
// .ci/run installs it) driven by chromedp against three real node
// processes. It logs in, sees three members, watches a member marked
// failed after its process is killed (without reloading: the page's event
// stream brings it), sees the cache's hit counts rise while a load runs,
// pauses and resumes a job, and is refused an action as a user who is not
// an administrator. With SHOAL_UI_SCREENSHOTS=DIR it saves a screenshot of
// each page there (docs/ui in this repository: see the README).

const uiAdminPW = "ui-Adm1n-e2e"

// chromium finds the browser, or "" if there is none.
func chromium() string {
	if p := os.Getenv("SHOAL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserCtx starts a headless browser (its own profile) and returns a
// context for its first tab.
func browserCtx(t *testing.T, parent context.Context, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // root in CI
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1360, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", exe, err)
	}
	return ctx
}

// run runs chromedp actions within d, failing the test with what.
func browse(t *testing.T, ctx context.Context, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
		defer bcancel()
		url, _ := chromedp.Run(bctx, chromedp.Location())
		body, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v (at %s)\n%.1500s", what, err, url, body)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, what, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitJS polls a JavaScript expression in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ok, err := chromedp.Run(sctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			html, _ := chromedp.Run(sctx, chromedp.Evaluate[string](`location.pathname + location.search + ": " +
				(document.querySelector(".error") ? document.querySelector(".error").textContent + "\n" : "") +
				(document.getElementById("live") ? document.getElementById("live").innerText : document.body.innerText)`))
			t.Fatalf("timed out after %v waiting for %s (%s, last error %v); the page shows:\n%.2000s", d, what, expr, err, html)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("SHOAL_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s (%d bytes)", path, len(png))
}

// login fills the login form that a page sent the browser to, and waits
// until the browser has left the login page for page. The login page has
// a #live element too, so waiting for that alone could return before the
// form's navigation started.
func login(t *testing.T, ctx context.Context, base, page, user, pw string) {
	t.Helper()
	browse(t, ctx, 60*time.Second, "log in as "+user,
		chromedp.Navigate(base+page),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SendKeys(chromedp.CSS(`#username`), user),
		chromedp.SendKeys(chromedp.CSS(`#password`), pw),
		chromedp.Submit(chromedp.CSS(`#password`)),
	)
	waitJS(t, ctx, 60*time.Second, "the browser at "+page+" after the login as "+user,
		`window.location.pathname + window.location.search === `+strconv.Quote(page)+
			` && document.readyState === "complete" && !!document.getElementById("live") && !document.getElementById("username")`)
}

// liveStreams waits until the page's event stream has delivered an
// update (the status line says so).
func waitLive(t *testing.T, ctx context.Context) {
	t.Helper()
	waitJS(t, ctx, 30*time.Second, "the live stream", `document.getElementById("live-status").classList.contains("live")`)
}

func TestDashboardInABrowser(t *testing.T) {
	exe := chromium()
	if exe == "" {
		t.Skip("no chromium on this machine (apt-get install chromium, or set SHOAL_CHROMIUM): the browser tests are skipped")
	}
	dir := t.TempDir()
	out, err := exec.Command(shoalBin, "seed", "--data-dir", dir, "--admin-password", uiAdminPW,
		"--users", "4", "--projects", "2", "--repos-per-project", "2", "--prs-per-repo", "6", "--comments-per-pr", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("shoal seed: %v\n%s", err, out)
	}
	add := exec.Command(shoalBin, "user", "add", "viewer", "--password-stdin", "--data-dir", dir)
	add.Stdin = strings.NewReader("viewer-pass-1\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("shoal user add: %v\n%s", err, out)
	}
	c := startCluster(t, localcluster.Options{Dir: dir, N: 3, Preset: "loopback", BootstrapExpect: 3, CacheMode: "distributed",
		IP: func(i int) string { return fmt.Sprintf("127.0.0.%d", 60+i) }})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := c.WaitAlive(ctx, 3); err != nil {
		t.Fatal(err)
	}
	base := "http://" + c.Nodes()[0].HTTP
	b := browserCtx(t, ctx, exe)

	// Log in; the cluster page lists three alive members.
	login(t, b, base, "/ui/cluster", "admin", uiAdminPW)
	waitLive(t, b)
	waitJS(t, b, 60*time.Second, "three alive members",
		`document.querySelectorAll('#members tbody tr[data-state="alive"]').length === 3`)

	// The partition table: 271 partitions over the three members.
	browse(t, b, 30*time.Second, "partitions", chromedp.Navigate(base+"/ui/partitions"))
	waitJS(t, b, 60*time.Second, "271 partitions owned by members",
		`document.querySelectorAll('#owners .p.m0, #owners .p.m1, #owners .p.m2').length === 271`)
	screenshot(t, b, "partitions")

	// Caches: the hit count of node1 rises while a load runs, on the page
	// as it is (the event stream updates it).
	browse(t, b, 30*time.Second, "caches", chromedp.Navigate(base+"/ui/caches"))
	waitLive(t, b)
	hitsJS := `(function(){var c=document.querySelector('#cache-nodes tr[data-node="node1"] td.hits');return c?parseInt(c.textContent.replace(/\D/g,''),10):-1})()`
	before := eval[int](t, b, "read hits", hitsJS)
	if before < 0 {
		t.Fatal("the caches page has no hit count for node1")
	}
	// Every member's counters, read over the peer RPC.
	waitJS(t, b, 60*time.Second, "three nodes' counters",
		`document.querySelectorAll('#cache-nodes tbody tr td.hits').length === 3`)
	var bases []string
	for _, p := range c.Nodes() {
		bases = append(bases, "http://"+p.HTTP)
	}
	stopLoad := restLoad(t, bases, 6)
	waitJS(t, b, 90*time.Second, "node1's hits to rise", hitsJS+" > "+strconv.Itoa(before+50))
	// A few more samples, for the charts.
	waitJS(t, b, 60*time.Second, "the hits chart", `document.querySelectorAll('figure.chart polyline').length >= 3`)
	time.Sleep(12 * time.Second)
	screenshot(t, b, "caches")
	browse(t, b, 30*time.Second, "git", chromedp.Navigate(base+"/ui/git"))
	waitLive(t, b)
	screenshot(t, b, "git")
	stopLoad()

	// Jobs: pause and resume the cluster's statistics job.
	browse(t, b, 30*time.Second, "jobs", chromedp.Navigate(base+"/ui/jobs"))
	waitJS(t, b, 60*time.Second, "the cluster-stats job", `!!document.querySelector('tr[data-job="cluster-stats"]')`)
	browse(t, b, 30*time.Second, "pause", chromedp.Click(chromedp.CSS(`#pause-cluster-stats`)), chromedp.WaitVisible(chromedp.CSS(`.flash`)))
	waitJS(t, b, 30*time.Second, "the job paused", `document.querySelector('tr[data-job="cluster-stats"]').dataset.state === "paused"`)
	screenshot(t, b, "jobs")
	browse(t, b, 30*time.Second, "resume", chromedp.Click(chromedp.CSS(`#resume-cluster-stats`)), chromedp.WaitVisible(chromedp.CSS(`#pause-cluster-stats`)))
	waitJS(t, b, 30*time.Second, "the job scheduled", `document.querySelector('tr[data-job="cluster-stats"]').dataset.state === "scheduled"`)

	for key, value := range map[string]string{"app/greeting": "hello", "app/motd": "Maintenance on Saturday 06:00–08:00 UTC.",
		"app/limits/clones": `{"per_minute": 120}`} {
		putKV(t, base, key, value)
	}
	browse(t, b, 30*time.Second, "store", chromedp.Navigate(base+"/ui/store?prefix=app/"), chromedp.WaitVisible(chromedp.CSS(`#keys`)))
	screenshot(t, b, "store")

	// Kill node3's process: the open cluster page marks it failed.
	browse(t, b, 30*time.Second, "cluster", chromedp.Navigate(base+"/ui/cluster"))
	waitLive(t, b)
	killed := time.Now()
	if err := c.Kill(3); err != nil {
		t.Fatal(err)
	}
	waitJS(t, b, 60*time.Second, "node3 marked failed",
		`(function(){var r=document.querySelector('#members tr[data-member="node3"]');return !!r && r.dataset.state==="failed"})()`)
	t.Logf("the page showed node3 failed %v after its SIGKILL", time.Since(killed).Round(time.Millisecond))
	waitJS(t, b, 30*time.Second, "the failure in the timeline", `document.getElementById("timeline").textContent.includes("node3 failed")`)
	waitJS(t, b, 30*time.Second, "node2's uptime", `!document.querySelector('#members tr[data-member="node2"] td.uptime').textContent.includes("—")`)
	screenshot(t, b, "cluster")

	// A user who is not an administrator: no store, no actions, and a
	// forged action is refused.
	v := browserCtx(t, ctx, exe)
	login(t, v, base, "/ui/jobs", "viewer", "viewer-pass-1")
	buttons := eval[int](t, v, "count buttons", `document.querySelectorAll('#jobs button').length`)
	if buttons != 0 {
		t.Fatalf("a viewer's jobs page has %d action buttons", buttons)
	}
	status := eval[int](t, v, "forged pause", `fetch("/ui/jobs/cluster-stats/pause", {method: "POST",
		headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "csrf=" + encodeURIComponent(document.querySelector('input[name="csrf"]').value)}).then(r => r.status)`,
		chromedp.EvalAwaitPromise)
	if status != http.StatusForbidden {
		t.Fatalf("a viewer's pause: %d, want 403", status)
	}
	browse(t, v, 30*time.Second, "viewer's store", chromedp.Navigate(base+"/ui/store"), chromedp.WaitVisible(chromedp.CSS(`.error`)))
	msg := eval[string](t, v, "read error", `document.querySelector(".error").textContent`)
	if !strings.Contains(msg, "Only administrators") {
		t.Fatalf("the viewer's store page says %q", msg)
	}
}

// putKV writes a key through /v1/kv as the seeded administrator.
func putKV(t *testing.T, base, key, value string) {
	t.Helper()
	req, _ := http.NewRequest("PUT", base+"/v1/kv/"+key, strings.NewReader(value))
	req.SetBasicAuth("admin", uiAdminPW)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /v1/kv/%s: %s", key, resp.Status)
	}
}

// restLoad reads a few REST resources through the nodes (round-robin) as
// the seeded administrator, from n goroutines, until stopped (at most two
// minutes).
func restLoad(t *testing.T, bases []string, n int) (stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	paths := []string{"/rest/api/1.0/projects?limit=5", "/rest/api/1.0/projects?limit=2"}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := i; ctx.Err() == nil; k++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", bases[k%len(bases)]+paths[k%len(paths)], nil)
				req.SetBasicAuth("admin", uiAdminPW)
				if resp, err := client.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}
