package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite the generated parts of README.md")

// The README's table of 'shoal node' flags is generated from the flags'
// definitions, so it cannot disagree with them: go test ./cmd/shoal -run
// TestREADME -update rewrites it.
func TestREADMENodeFlags(t *testing.T) {
	const path = "../../README.md"
	const begin, end = "<!-- BEGIN shoal node flags: generated, see cmd/shoal/readme_test.go -->\n", "<!-- END shoal node flags -->"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q and %q", begin, end)
	}
	s := cli.New("node", "", "")
	bindNode(s)
	var table bytes.Buffer
	s.Markdown(&table)
	if got := readme[i+len(begin) : j]; got != table.String() {
		if !*update {
			t.Fatalf("README.md's table of node flags is out of date: go test ./cmd/shoal -run TestREADME -update\n%s", table.String())
		}
		if err := os.WriteFile(path, []byte(readme[:i+len(begin)]+table.String()+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The README's tour, run as written: its first sh block, against 'shoal
// up -n 3 --seed --admin-password shoal-admin' (what 'make run' starts)
// in a scratch directory where bin/shoal is this build and shoal-data the
// cluster's directory. Only the ports change (the tour's 8081–8083 become
// the nodes' own), and every curl fails on an HTTP error (--fail-with-body)
// and the script on any failing command (set -euo pipefail). So the
// tour's credentials hold: the shoal commands without any (status, jobs,
// kv) through the admin token 'shoal up' wrote, curl with -u
// admin:shoal-admin, git anonymously on a public repository.
func TestREADMETour(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, tour, ok := strings.Cut(readme, "## A tour\n")
	if !ok {
		t.Fatal("README.md has no tour")
	}
	_, tour, _ = strings.Cut(tour, "```sh\n")
	tour, _, ok = strings.Cut(tour, "```")
	if !ok || !strings.Contains(tour, "bin/shoal kv put") {
		t.Fatalf("no sh block in the tour: %q", tour)
	}

	work := t.TempDir()
	if err := os.MkdirAll(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shoalBin, filepath.Join(work, "bin", "shoal")); err != nil {
		t.Fatal(err)
	}
	up := exec.Command(shoalBin, "up", "-n", "3", "--data-dir", "shoal-data", "--seed", "--admin-password", "shoal-admin",
		"--base-port", "0", "--http-base", "0", "--resp-base", "0")
	up.Dir = work
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	up.Stderr = os.Stderr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		up.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { up.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			up.Process.Kill()
			<-done
		}
	})
	isUp := make(chan bool, 1)
	var upOut strings.Builder
	var upMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			upMu.Lock()
			upOut.WriteString(sc.Text() + "\n")
			upMu.Unlock()
			if !sent && strings.Contains(sc.Text(), "cluster of 3 nodes is up") {
				isUp <- true
				sent = true
			}
		}
		if !sent {
			isUp <- false
		}
	}()
	select {
	case ok := <-isUp:
		if !ok {
			upMu.Lock()
			t.Fatalf("shoal up ended before the cluster was up:\n%s", upOut.String())
		}
	case <-time.After(5 * time.Minute):
		upMu.Lock()
		t.Fatalf("the seeded cluster not up within 5 minutes:\n%s", upOut.String())
	}
	var cf clusterFile
	if err := readJSONFile(filepath.Join(work, "shoal-data", "cluster.json"), &cf); err != nil {
		t.Fatal(err)
	}
	if len(cf.Nodes) != 3 {
		t.Fatalf("cluster.json names %d nodes", len(cf.Nodes))
	}
	ports := map[string]string{}
	for i, p := range cf.Nodes {
		ports[fmt.Sprintf("127.0.0.1:%d", 8081+i)] = p.HTTP
	}
	// 'shoal up' says the cluster is up once its nodes serve; the raft
	// election may still be under way on a loaded machine. A reader
	// switching terminals takes longer than that; the test waits for it.
	for _, p := range cf.Nodes {
		testkit.Eventually(t, 2*time.Minute, p.Name+" ready", func() bool {
			resp, err := http.Get("http://" + p.HTTP + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	script := "set -euo pipefail\n" + tour
	for from, to := range ports {
		script = strings.ReplaceAll(script, from, to)
	}
	script = strings.ReplaceAll(script, "curl -s ", "curl -sS --fail-with-body ")
	home := t.TempDir()
	sh := exec.Command("bash", "-c", script)
	sh.Dir = work
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHOAL_") && !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	sh.Env = append(env, "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Tour", "GIT_AUTHOR_EMAIL=tour@example.com", "GIT_COMMITTER_NAME=Tour", "GIT_COMMITTER_EMAIL=tour@example.com")
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("the tour failed: %v\n%s", err, out)
	}
	for _, want := range []string{`{"status":"ready"}`, `"key":"BILL"`, `"title":"A better title"`, `"text":"LGTM"`,
		`"key":"DEMO"`, `result="hit"} 1`, `result="miss"} 1`, "hello"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("the tour's output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("the tour's output:\n%s", out)
	}
}
