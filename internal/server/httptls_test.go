package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// writeSelfSigned writes a self-signed certificate with the given serial
// and its key.
func writeSelfSigned(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// The listener's pair: both files or neither; one that does not load
// refuses the start; a new pair is picked up, a broken one is not.
func TestHTTPKeyPair(t *testing.T) {
	c := DefaultHTTPConfig()
	c.TLS = HTTPTLS{CertFile: "cert.pem"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "TLS.KeyFile") {
		t.Fatalf("a certificate without a key: %v", err)
	}
	dir := t.TempDir()
	cfg := HTTPTLS{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")}
	if _, err := newKeyPair(cfg, testkit.Logger(t)); err == nil {
		t.Fatal("missing files loaded")
	}
	writeSelfSigned(t, cfg.CertFile, cfg.KeyFile, 1)
	kp, err := newKeyPair(cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	kp.now = func() time.Time { return now }
	serial := func() int64 {
		t.Helper()
		now = now.Add(2 * time.Second) // past the once-a-second check
		c, err := kp.getCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.Int64()
	}
	if got := serial(); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	writeSelfSigned(t, cfg.CertFile, cfg.KeyFile, 2)
	if got := serial(); got != 2 {
		t.Fatalf("after a renewal: serial %d, want 2", got)
	}
	os.WriteFile(cfg.KeyFile, []byte("half written"), 0o600)
	if got := serial(); got != 2 {
		t.Fatalf("after a broken write: serial %d, want the previous 2", got)
	}
}
