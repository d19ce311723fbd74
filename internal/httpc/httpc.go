// Package httpc is the small HTTP client the shoal command and the local
// cluster launcher use to talk to a node's JSON API.
package httpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// maxBody bounds an answer read into memory.
const maxBody = 64 << 20

// Base turns a node's address ("host:port" or a URL) into a base URL
// without a trailing slash.
func Base(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimSuffix(addr, "/")
}

// BaseTLS is Base, with https:// for an address without a scheme when
// secure.
func BaseTLS(addr string, secure bool) string {
	if secure && !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	return Base(addr)
}

// TLSConfig is a client configuration that trusts the certificate
// authorities in caFile (PEM), for a node that serves HTTPS with a
// certificate of the cluster's CA or a self-signed one.
func TLSConfig(caFile string) (*tls.Config, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Do sends an anonymous request to Base(addr)+path and returns the body
// of a 200 answer. Any other status is an error carrying the node's error
// message (ErrorMessage) when there is one, else the status and body.
func Do(ctx context.Context, method, addr, path string, body []byte) ([]byte, error) {
	return DoToken(ctx, "", method, addr, path, body)
}

// DoToken is Do with an access token sent as a Bearer token ("" sends
// none).
func DoToken(ctx context.Context, token, method, addr, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, Base(addr)+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		if msg := ErrorMessage(out); msg != "" {
			return nil, fmt.Errorf("%s (HTTP %d)", msg, resp.StatusCode)
		}
		return nil, fmt.Errorf("%s: %s: %s", addr, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}

// ErrorMessage is the message of a node's JSON error body: the messages
// of {"errors":[{"message":…},…]} joined by "; ", or the older
// {"error":…}; "" when body is neither.
func ErrorMessage(body []byte) string {
	var e struct {
		Error  string `json:"error"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	var msgs []string
	for _, m := range e.Errors {
		if m.Message != "" {
			msgs = append(msgs, m.Message)
		}
	}
	if len(msgs) > 0 {
		return strings.Join(msgs, "; ")
	}
	return e.Error
}
