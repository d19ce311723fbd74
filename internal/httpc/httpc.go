// Package httpc is the small HTTP client the shoal command and the local
// cluster launcher use to talk to a node's JSON API.
package httpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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

// Do sends a request to Base(addr)+path and returns the body of a 200
// answer. Any other status is an error carrying the node's JSON "error"
// message when there is one, else the status and body.
func Do(ctx context.Context, method, addr, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, Base(addr)+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
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
		var e struct{ Error string }
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return nil, fmt.Errorf("%s: %s: %s", addr, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}
