package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A node serving HTTPS with a certificate from 'shoal tls init/issue':
// curl and git (clone, push, anonymous clone) work with the cluster's CA,
// the shoal CLI with --ca, plaintext HTTP is not served, a client that
// does not trust the CA is refused, and a certificate written over the
// files is served to new connections without a restart.
func TestHTTPTLSWithCurlAndGit(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "tls")
	run := func(name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = gitClientEnv(t.TempDir())
		cmd.Env = append(cmd.Env, "SHOAL_PASSWORD="+restAdminPW)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(shoalBin, "seed", "--data-dir", dir, "--admin-password", restAdminPW,
		"--users", "1", "--projects", "1", "--repos-per-project", "1", "--prs-per-repo", "1", "--comments-per-pr", "1")
	run(shoalBin, "tls", "init", "--dir", certs)
	run(shoalBin, "tls", "issue", "node1", "--dir", certs, "--ip", "127.0.0.171", "--dns", "localhost")
	ca := filepath.Join(certs, "ca.pem")
	ready := filepath.Join(dir, "ready.json")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := exec.CommandContext(ctx, shoalBin, "node", "--name", "node1", "--data-dir", filepath.Join(dir, "node1"),
		"--bind", "127.0.0.171:0", "--rpc", "127.0.0.171:0", "--raft", "127.0.0.171:0", "--http", "127.0.0.171:0",
		"--bootstrap-expect", "1", "--ready-file", ready, "--log-file", filepath.Join(dir, "node1.log"),
		"--http-tls-cert", filepath.Join(certs, "node1.pem"), "--http-tls-key", filepath.Join(certs, "node1-key.pem"))
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		node.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { node.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			node.Process.Kill()
			<-done
		}
	})
	var info readyInfo
	waitUntil(t, 60*time.Second, "the node's ready file", func() bool {
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &info) == nil
	})
	base := "https://" + info.HTTP
	waitUntil(t, 60*time.Second, "the node ready over HTTPS", func() bool {
		out, err := exec.Command("curl", "-sf", "--cacert", ca, base+"/readyz").CombinedOutput()
		return err == nil && strings.Contains(string(out), "ready")
	})

	// curl, with the CA; without it, refused; plaintext, not served.
	if out, err := exec.Command("curl", "-sS", "-o", "/dev/null", base+"/readyz").CombinedOutput(); err == nil {
		t.Fatalf("curl without the CA trusted the node: %s", out)
	}
	if out, err := exec.Command("curl", "-sS", "-m", "10", "http://"+info.HTTP+"/readyz").CombinedOutput(); err == nil && strings.Contains(string(out), "ready") {
		t.Fatalf("plaintext HTTP served: %s", out)
	}
	run("curl", "-sSf", "--cacert", ca, "-u", "admin:"+restAdminPW, "-H", "Content-Type: application/json",
		"-d", `{"key":"TLS","name":"Over TLS"}`, base+"/rest/api/1.0/projects")
	run("curl", "-sSf", "--cacert", ca, "-u", "admin:"+restAdminPW, "-H", "Content-Type: application/json",
		"-d", `{"name":"demo","public":true}`, base+"/rest/api/1.0/projects/TLS/repos")

	// The CLI with --ca (an address without a scheme is then HTTPS).
	run(shoalBin, "kv", "put", "tls/greeting", "hello", "--addr", info.HTTP, "--ca", ca, "--user", "admin")
	if out := run(shoalBin, "kv", "get", "tls/greeting", "--addr", info.HTTP, "--ca", ca, "--user", "admin"); !strings.Contains(out, "hello") {
		t.Fatalf("kv get over HTTPS: %s", out)
	}

	// git: push, then an anonymous clone, trusting the CA.
	home := t.TempDir()
	git := func(wd string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "http.sslCAInfo=" + ca}, args...)...)
		cmd.Dir, cmd.Env = wd, gitClientEnv(home)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	work := t.TempDir()
	git(work, "clone", "-q", "https://admin:"+restAdminPW+"@"+info.HTTP+"/scm/TLS/demo.git", "demo")
	os.WriteFile(filepath.Join(work, "demo", "README"), []byte("over TLS\n"), 0o644)
	git(filepath.Join(work, "demo"), "add", "README")
	git(filepath.Join(work, "demo"), "commit", "-q", "-m", "first")
	git(filepath.Join(work, "demo"), "push", "-q", "origin", "HEAD:refs/heads/main")
	head := git(filepath.Join(work, "demo"), "rev-parse", "HEAD")
	git(work, "clone", "-q", base+"/scm/TLS/demo.git", "anon")
	if got := git(filepath.Join(work, "anon"), "rev-parse", "HEAD"); got != head {
		t.Fatalf("anonymous clone at %s, pushed %s", got, head)
	}

	// A renewed certificate written over the files is served to new
	// connections within a second or so, without a restart.
	serial := func() string {
		pool := x509.NewCertPool()
		b, _ := os.ReadFile(ca)
		pool.AppendCertsFromPEM(b)
		c, err := tls.Dial("tcp", info.HTTP, &tls.Config{RootCAs: pool, ServerName: "127.0.0.171"})
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	run(shoalBin, "tls", "issue", "node1", "--dir", certs, "--ip", "127.0.0.171")
	waitUntil(t, 30*time.Second, "the renewed certificate served", func() bool {
		s := serial()
		return s != before && !strings.HasPrefix(s, "error")
	})
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}).Get(base + "/readyz")
	if err == nil {
		resp.Body.Close()
		t.Fatal("Go's client without the CA trusted the node")
	}
}
