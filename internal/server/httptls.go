package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
)

// HTTPTLS is where the HTTP listener's certificate and key are, PEM
// files. Both or neither: with them the node serves HTTPS (TLS 1.2 or
// later, HTTP/1.1) on its HTTP address, and plaintext HTTP no more.
type HTTPTLS struct {
	CertFile, KeyFile string
}

// Enabled reports whether TLS is configured.
func (c HTTPTLS) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

func (c HTTPTLS) validate() error {
	switch {
	case c.CertFile == "" && c.KeyFile != "":
		return config.Invalid("server", "CertFile", c.CertFile, "a certificate file to go with the key file")
	case c.CertFile != "" && c.KeyFile == "":
		return config.Invalid("server", "KeyFile", c.KeyFile, "a key file to go with the certificate file")
	}
	return nil
}

// keyPair serves the HTTP listener's certificate and picks up a new one
// written over the files (a renewal) without a restart: at a handshake,
// at most once a second, it compares the files' sizes and modification
// times with those it loaded, and loads them again if they changed. A
// pair that does not load (half written, a key of another certificate)
// is logged and the current one kept; the next check tries again.
type keyPair struct {
	cfg HTTPTLS
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamps    [2]stamp
	checkedAt time.Time
}

type stamp struct {
	size int64
	mod  time.Time
}

func newKeyPair(cfg HTTPTLS, log *slog.Logger) (*keyPair, error) {
	k := &keyPair{cfg: cfg, log: log, now: time.Now}
	st, err := k.stat()
	if err == nil {
		err = k.load(st)
	}
	if err != nil {
		return nil, fmt.Errorf("HTTP TLS: %w", err)
	}
	return k, nil
}

func (k *keyPair) stat() ([2]stamp, error) {
	var st [2]stamp
	for i, path := range []string{k.cfg.CertFile, k.cfg.KeyFile} {
		fi, err := os.Stat(path)
		if err != nil {
			return st, err
		}
		st[i] = stamp{fi.Size(), fi.ModTime()}
	}
	return st, nil
}

// load reads the pair; the caller holds mu or owns k.
func (k *keyPair) load(st [2]stamp) error {
	cert, err := tls.LoadX509KeyPair(k.cfg.CertFile, k.cfg.KeyFile)
	if err != nil {
		return err
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	k.cert, k.stamps = &cert, st
	return nil
}

// getCertificate is tls.Config.GetCertificate.
func (k *keyPair) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := k.now(); now.Sub(k.checkedAt) >= time.Second {
		k.checkedAt = now
		st, err := k.stat()
		if err == nil && st != k.stamps {
			if err = k.load(st); err == nil {
				k.log.Info("HTTP TLS: certificate reloaded", "cert", k.cfg.CertFile, "not_after", k.cert.Leaf.NotAfter)
			}
		}
		if err != nil {
			k.log.Warn("HTTP TLS: could not reload the certificate; serving the one loaded before", "cert", k.cfg.CertFile, "err", err)
		}
	}
	if k.cert == nil {
		return nil, errors.New("no certificate")
	}
	return k.cert, nil
}

// serverConfig is the listener's TLS configuration: HTTP/1.1 only (the
// front's request-body deadlines and its closing of a connection after a
// 408 are HTTP/1.1's).
func (k *keyPair) serverConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: k.getCertificate, NextProtos: []string{"http/1.1"}}
}
