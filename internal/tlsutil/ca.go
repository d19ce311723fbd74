// Package tlsutil is shoal's cluster identity: a certificate authority of
// the cluster's own, node certificates whose name is the node's name, and
// the mutual TLS that the peer RPC and raft run over.
//
// # Names
//
// A node certificate carries the node's name twice: as its subject's
// common name, for people reading it (openssl x509 -text), and as a URI
// subject alternative name shoal://node/NAME (NAME path-escaped), which is
// the one shoal trusts. A URI, not a DNS name, because a node's name is
// any UTF-8 string of up to 64 bytes while a DNS name must be ASCII
// letters, digits and hyphens, and so that a certificate's DNS names and
// IP addresses remain free for what they usually mean (the host names and
// addresses a client may reach the node at, for HTTP). A certificate
// without exactly one shoal://node/ URI is not a node certificate.
//
// Every node certificate may be used both as a server's and a client's:
// each node both accepts and dials connections.
//
// # Files
//
// InitCA writes DIR/ca.pem and DIR/ca-key.pem; Issue writes DIR/NAME.pem
// and DIR/NAME-key.pem, signed by the CA in DIR. Keys are ECDSA P-256
// (PKCS #8). Files are written 0600 into a directory that is made 0700,
// each through a temporary file and a rename, so a node reloading its
// certificate never reads half a file.
package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// The files of a certificate directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// Default lifetimes.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultNodeValidity = 365 * 24 * time.Hour
)

// URIScheme and uriHost make a node's URI: shoal://node/NAME.
const (
	URIScheme = "shoal"
	uriHost   = "node"
)

// ErrExists is returned by InitCA when the directory already has a CA.
var ErrExists = errors.New("tlsutil: a CA already exists")

// CertFile and KeyFile are the names of a node's certificate and key in a
// certificate directory.
func CertFile(name string) string { return name + ".pem" }

// KeyFile is the name of a node's private key file.
func KeyFile(name string) string { return name + "-key.pem" }

// NodeURI is the URI naming a node in its certificate.
func NodeURI(name string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: uriHost, Path: "/" + name}
}

// CheckName refuses what cannot be a node's name: empty, over 64 bytes,
// not UTF-8, or one that cannot be a file name in a certificate
// directory (a slash, a NUL, "." or "..").
func CheckName(name string) error {
	if name == "" || len(name) > 64 || !utf8.ValidString(name) {
		return fmt.Errorf("node name %q: want 1-64 bytes of UTF-8", name)
	}
	if strings.ContainsAny(name, "/\x00") || name == "." || name == ".." || name == "ca" {
		return fmt.Errorf("node name %q: it cannot contain a slash and cannot be '.', '..' or 'ca'", name)
	}
	return nil
}

// NameOf is the node name a certificate carries (its one shoal://node/
// URI), or an error saying why it has none. It does not check the
// certificate's signature: verify it first.
func NameOf(cert *x509.Certificate) (string, error) {
	var name string
	found := 0
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme || u.Host != uriHost {
			continue
		}
		found++
		name = strings.TrimPrefix(u.Path, "/")
	}
	switch {
	case found == 0:
		return "", errors.New("the certificate names no shoal node (no shoal://node/ URI)")
	case found > 1:
		return "", errors.New("the certificate names more than one shoal node")
	}
	if err := CheckName(name); err != nil {
		return "", fmt.Errorf("the certificate's %v", err)
	}
	return name, nil
}

// CAOptions shape a new CA.
type CAOptions struct {
	// Name is the CA's common name (default "shoal cluster CA").
	Name string
	// Validity is how long it is valid (default DefaultCAValidity).
	Validity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// InitCA creates a CA in dir (made 0700 if missing): ca.pem and
// ca-key.pem. It refuses, with ErrExists, a directory that already has
// either: replacing a CA would orphan every certificate it signed.
func InitCA(dir string, o CAOptions) error {
	if o.Name == "" {
		o.Name = "shoal cluster CA"
	}
	if o.Validity <= 0 {
		o.Validity = DefaultCAValidity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, f := range []string{CAFile, CAKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%w in %s (%s); issue node certificates with it, or pick another directory", ErrExists, dir, f)
		}
	}
	if err := mkdir(dir); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := o.Now()
	ski, err := keyID(key.Public())
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.Name, Organization: []string{"shoal"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(o.Validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("tlsutil: creating the CA: %w", err)
	}
	// The key first: a directory with a ca.pem always has its key.
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", der)
}

// IssueOptions shape a node certificate.
type IssueOptions struct {
	// IPs and DNS are extra subject alternative names: the addresses and
	// host names clients reach the node at (for HTTPS).
	IPs []net.IP
	DNS []string
	// Validity is how long it is valid (default DefaultNodeValidity); it
	// ends no later than the CA's.
	Validity time.Duration
	// OutDir is where NAME.pem and NAME-key.pem are written (default:
	// the CA's directory).
	OutDir string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Issue issues a certificate for node name, signed by the CA in caDir,
// and writes it with a new key as NAME.pem and NAME-key.pem, replacing
// any earlier ones (which is how a certificate is renewed). It returns
// the certificate.
func Issue(caDir, name string, o IssueOptions) (*x509.Certificate, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	for _, d := range o.DNS {
		if d == "" || strings.ContainsAny(d, " /") {
			return nil, fmt.Errorf("DNS name %q: want a host name", d)
		}
	}
	if o.Validity <= 0 {
		o.Validity = DefaultNodeValidity
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OutDir == "" {
		o.OutDir = caDir
	}
	ca, caKey, err := LoadCA(caDir)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := o.Now()
	notAfter := now.Add(o.Validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("tlsutil: the CA in %s expired on %s", caDir, ca.NotAfter.Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{CommonName: name, Organization: []string{"shoal"}},
		NotBefore:      now.Add(-time.Minute),
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:           []*url.URL{NodeURI(name)},
		IPAddresses:    o.IPs,
		DNSNames:       o.DNS,
		AuthorityKeyId: ca.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: issuing %s: %w", name, err)
	}
	if err := mkdir(o.OutDir); err != nil {
		return nil, err
	}
	// The key first, then the certificate: a node reloading in between
	// finds a pair that does not match, keeps its current one and tries
	// again at its next check.
	if err := writeKey(filepath.Join(o.OutDir, KeyFile(name)), key); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(o.OutDir, CertFile(name)), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// LoadCA reads the CA certificate and key in dir.
func LoadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certs, err := readCerts(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, err
	}
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("tlsutil: %s holds %d certificates; issuing needs the one CA whose key is %s", filepath.Join(dir, CAFile), len(certs), CAKeyFile)
	}
	b, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: the CA's key: %w", err)
	}
	key, err := parseKey(b)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	ca := certs[0]
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("tlsutil: %s is not a CA certificate", filepath.Join(dir, CAFile))
	}
	if !publicKeysEqual(ca.PublicKey, key.Public()) {
		return nil, nil, fmt.Errorf("tlsutil: %s is not the key of %s", filepath.Join(dir, CAKeyFile), filepath.Join(dir, CAFile))
	}
	return ca, key, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// readCerts reads every certificate of a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return out, nil
}

func parseKey(b []byte) (crypto.Signer, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key in it")
		}
		var k any
		var err error
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", k)
		}
		return s, nil
	}
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// keyID is the SHA-1 of the public key's encoding (RFC 5280, 4.2.1.2).
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	h := sha1.Sum(der)
	return h[:], nil
}

// mkdir makes dir 0700 if it is missing. An existing directory's mode is
// left as it is: the files in it are 0600.
func mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsutil: %w", err)
	}
	return nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der)
}

// writePEM writes one PEM block to path, 0600, through a temporary file
// in the same directory and a rename.
func writePEM(path, typ string, der []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("tlsutil: %w", err)
	}
	defer os.Remove(f.Name())
	err = f.Chmod(0o600)
	if err == nil {
		err = pem.Encode(f, &pem.Block{Type: typ, Bytes: der})
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("tlsutil: writing %s: %w", path, err)
	}
	return nil
}
