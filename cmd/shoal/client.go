package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// clientSettings are the settings of every command that talks to a
// node's HTTP API: which node, and whose credentials.
type clientSettings struct {
	addr, dataDir, user, password, token, ca string
	passwordStdin, json                      bool
}

// bindClient binds the client settings onto s.
func bindClient(s *cli.Set) *clientSettings {
	c := &clientSettings{dataDir: "shoal-data"}
	s.String(&c.addr, "addr", "HTTP address of a node (default: the first node in <data-dir>/cluster.json)")
	s.String(&c.dataDir, "data-dir", "cluster directory written by 'shoal up'")
	s.String(&c.user, "user", "a user's name (password in $SHOAL_PASSWORD or --password-stdin)")
	s.String(&c.password, "password", "the user's password (prefer $SHOAL_PASSWORD or --password-stdin: arguments are visible to other users)")
	s.Bool(&c.passwordStdin, "password-stdin", "read the password from the first line of standard input")
	s.String(&c.token, "token", "an access token, sent as a Bearer token (default: the administrator's token that 'shoal up' wrote in <data-dir>/admin-token, for its nodes)")
	s.Bool(&c.json, "json", "print the JSON answer")
	s.String(&c.ca, "ca", "trust the node's HTTPS certificate if this CA (PEM: the cluster's ca.pem, or a self-signed certificate) signed it; an --addr without a scheme is then https://")
	return c
}

// node is the node to ask: --addr, else the first node of cluster.json.
func (c *clientSettings) node() (string, error) {
	if c.addr != "" {
		return c.addr, nil
	}
	var cf clusterFile
	path := filepath.Join(c.dataDir, "cluster.json")
	if err := readJSONFile(path, &cf); err != nil || len(cf.Nodes) == 0 {
		return "", fmt.Errorf("no --addr given and %s is unreadable (is 'shoal up' running?): %v", path, err)
	}
	return cf.Nodes[0].HTTP, nil
}

// client is an HTTP client of a node, with the user's credentials if
// any were given. It follows redirects (a follower sends what only the
// leader does to the leader) with the same credentials: those go only to
// members' addresses that the node named.
type client struct {
	base, user, secret, token string
	hc                        *http.Client
}

// client makes the client; admin says the command needs credentials.
func (c *clientSettings) client(stdin io.Reader, admin bool) (*client, error) {
	node, err := c.node()
	if err != nil {
		return nil, err
	}
	cl := &client{base: httpc.BaseTLS(node, c.ca != ""), user: c.user, secret: c.password, token: c.token}
	if c.user != "" && c.passwordStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		cl.secret = strings.TrimRight(line, "\r\n")
	}
	if cl.user == "" && cl.token == "" {
		cl.token = c.localToken(node)
	}
	if admin && cl.user == "" && cl.token == "" {
		return nil, usagef("an administrator's credentials are needed: --user NAME (password in $SHOAL_PASSWORD or --password-stdin) or --token (or $SHOAL_TOKEN)")
	}
	var transport http.RoundTripper
	if c.ca != "" {
		tc, err := httpc.TLSConfig(c.ca)
		if err != nil {
			return nil, err
		}
		transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	cl.hc = &http.Client{Transport: transport, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 3 {
			return errors.New("redirected three times: the leader keeps changing; try again")
		}
		cl.authorize(req)
		return nil
	}}
	return cl, nil
}

// localToken is the administrator's token that 'shoal up' wrote in the
// data directory, when node is one of that cluster's nodes (listed in its
// cluster.json): the token never goes to another address. "" otherwise.
func (c *clientSettings) localToken(node string) string {
	var cf clusterFile
	if readJSONFile(filepath.Join(c.dataDir, "cluster.json"), &cf) != nil {
		return ""
	}
	for _, n := range cf.Nodes {
		if n.HTTP == node || httpc.Base(n.HTTP) == node {
			tok, err := localcluster.ReadAdminToken(c.dataDir)
			if err != nil {
				return ""
			}
			return tok
		}
	}
	return ""
}

func (c *client) authorize(req *http.Request) {
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.user != "":
		req.SetBasicAuth(c.user, c.secret)
	}
}

// do sends a request and returns the body of a 200 answer, or an error
// with the node's message.
func (c *client) do(ctx context.Context, method, path string, body []byte) ([]byte, http.Header, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body) // replayable on a redirect
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, nil, err
	}
	c.authorize(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, cp.MaxSnapshotSize+1))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		if msg := httpc.ErrorMessage(out); msg != "" {
			return nil, nil, fmt.Errorf("%s (HTTP %d)", msg, resp.StatusCode)
		}
		return nil, nil, fmt.Errorf("%s: %s: %s", req.URL.Host, resp.Status, bytes.TrimSpace(out))
	}
	return out, resp.Header, nil
}
