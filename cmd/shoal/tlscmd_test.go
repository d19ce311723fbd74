package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/tlsutil"
)

func TestTLSCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errb bytes.Buffer
	if code := run([]string{"tls", "init", "--dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("tls init: exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"tls", "init", "--dir", dir}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "already exists") {
		t.Fatalf("tls init again: exit %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"tls", "issue", "node1", "--dir", dir, "--ip", "127.0.0.1", "--dns", "localhost"}, &out, &errb); code != 0 {
		t.Fatalf("tls issue: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "--tls-cert "+filepath.Join(dir, "node1.pem")) {
		t.Fatalf("tls issue printed:\n%s", out.String())
	}
	r, err := tlsutil.NewReloader(tlsutil.Config{Name: "node1", CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "node1.pem"), KeyFile: filepath.Join(dir, "node1-key.pem"), PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ips := r.Certificate().Leaf.IPAddresses; len(ips) != 1 || ips[0].String() != "127.0.0.1" {
		t.Fatalf("IP SANs %v", ips)
	}
	for _, bad := range [][]string{
		{"tls", "issue", "node2", "--dir", dir, "--ip", "not-an-ip"},
		{"tls", "issue", "a/b", "--dir", dir},
		{"tls", "issue", "--dir", dir},
	} {
		errb.Reset()
		if code := run(bad, &out, &errb); code != 2 {
			t.Fatalf("%v: exit %d, want 2: %s", bad, code, errb.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "node2.pem")); err == nil {
		t.Fatal("a refused issue wrote a certificate")
	}
}
