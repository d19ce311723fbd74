package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/localcluster"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// 'shoal up' (make run) starts a secured cluster with no extra step: it
// makes a CA and the nodes' certificates in its directory (0600 files in
// a 0700 directory), the nodes form the cluster over mutual TLS (raft
// elects a leader, a write through one node is read through another,
// which takes the peer RPC and raft), each node exports its certificate's
// expiry, and a plaintext client at a node's RPC and raft ports is
// refused, logged and counted in /metrics.
func TestUpFormsSecuredCluster(t *testing.T) {
	dir := t.TempDir()
	_, sc := startUp(t, dir)
	waitForLine(t, sc, "run over mutual TLS")
	tlsDir := filepath.Join(dir, "tls")
	if st, err := os.Stat(tlsDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v, %v; want a 0700 directory", tlsDir, st.Mode(), err)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "node1.pem", "node1-key.pem", "node3.pem", "node3-key.pem"} {
		if st, err := os.Stat(filepath.Join(tlsDir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want 0600", f, st.Mode(), err)
		}
	}
	var cf clusterFile
	if err := readJSONFile(filepath.Join(dir, "cluster.json"), &cf); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, localcluster.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	n1, n2, n3 := cf.Nodes[0], cf.Nodes[1], cf.Nodes[2]

	// A write through node1, read (linearizably, through the leader)
	// through node3.
	testkit.Eventually(t, 60*time.Second, "a write through node1", func() bool {
		code, _, err := httpDo(token, http.MethodPut, "http://"+n1.HTTP+"/v1/kv/secured/hello", "over TLS")
		return err == nil && code == http.StatusOK
	})
	code, body, err := httpDo(token, http.MethodGet, "http://"+n3.HTTP+"/v1/kv/secured/hello", "")
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), "over TLS") && !strings.Contains(string(body), "b3ZlciBUTFM=") {
		t.Fatalf("read through node3: %d %s %v", code, body, err)
	}
	// The members' raft addresses, to attack node2's.
	v, err := localcluster.FetchView(context.Background(), n2.HTTP, token)
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := ""
	for _, m := range v.Members {
		if m.Name == n2.Name {
			raftAddr = m.Raft
		}
		if m.State != "alive" {
			t.Fatalf("member %s is %s", m.Name, m.State)
		}
	}
	if raftAddr == "" || len(v.Members) != 3 || v.Raft.Leader == "" {
		t.Fatalf("cluster view: %+v", v)
	}

	// node1's certificate expires in about a year.
	_, metrics, err := httpDo(token, http.MethodGet, "http://"+n1.HTTP+"/metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^shoal_tls_cert_expiry_seconds\{cert="node",node="node1"\} (\S+)$`).FindSubmatch(metrics)
	if m == nil {
		t.Fatalf("no shoal_tls_cert_expiry_seconds for node1's certificate in:\n%s", grepLines(metrics, "shoal_tls"))
	}
	if secs, _ := strconv.ParseFloat(string(m[1]), 64); secs < 300*24*3600 || secs > 366*24*3600 {
		t.Fatalf("node1's certificate expires in %v s", secs)
	}

	// Plaintext at node2's peer RPC and raft ports.
	for _, addr := range []string{n2.RPC, raftAddr} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("\x00\x00\x00\x05hello in plaintext"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatalf("%s answered plaintext with %d bytes", addr, n)
		}
		c.Close()
	}
	for _, listener := range []string{"rpc", "raft"} {
		want := `shoal_peer_refused_total{listener="` + listener + `",node="node2",reason="` + tlsutil.ReasonNotTLS + `"} 1`
		testkit.Eventually(t, 30*time.Second, "node2 to count the plaintext "+listener+" client", func() bool {
			_, metrics, err := httpDo(token, http.MethodGet, "http://"+n2.HTTP+"/metrics", "")
			return err == nil && strings.Contains(string(metrics), want)
		})
	}
	// Counted, then logged.
	for _, listener := range []string{"rpc", "raft"} {
		re := regexp.MustCompile(`level=WARN .*refused peer.*listener=` + listener + ` reason=not_tls remote=127\.0\.0\.1:\d+`)
		testkit.Eventually(t, 30*time.Second, "node2 to log the refusal of the plaintext "+listener+" client", func() bool {
			logb, err := os.ReadFile(filepath.Join(dir, "node2", "node.log"))
			return err == nil && re.Match(logb)
		})
	}
}

// grepLines is the lines of b that contain s.
func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
