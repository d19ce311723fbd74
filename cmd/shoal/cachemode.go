package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/modeswitch"
	"github.com/shoal-dev/shoal/internal/server"
)

func init() {
	register(
		&command{name: "cache mode", bind: bindCacheMode(false),
			summary: "Show the cluster's cache mode (local, distributed or near) and the answering node's. Needs an administrator's credentials."},
		&command{name: "cache switch", args: "MODE", min: 1, max: 1, bind: bindCacheMode(true),
			summary: "Switch the running cluster's cache mode to MODE (local, distributed or near) without a restart; returns when every node runs it. Needs an administrator's credentials."},
	)
}

func bindCacheMode(set bool) func(*cli.Set) runFunc {
	return func(s *cli.Set) runFunc {
		c := bindClient(s)
		timeout := 2 * time.Minute
		s.Duration(&timeout, "timeout", "how long to wait for the switch")
		return func(ctx context.Context, sio stdio, args []string) error {
			cl, err := c.client(sio.in, true)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var out []byte
			if set {
				start := time.Now()
				// An answer that leaves the outcome open (a leader lost
				// mid-commit, a timeout, a switch still under way) is
				// followed until the switch is seen complete.
				res, err := modeswitch.Switch(ctx, cl.modeDoer(), args[0], modeswitch.Options{})
				if err != nil {
					return err
				}
				if out, err = json.Marshal(server.CacheModeView{Cluster: res.Record, Node: res.Record}); err != nil {
					return err
				}
				if o, _, err := cl.do(ctx, http.MethodGet, modeswitch.Path, nil); err == nil {
					out = o // the answering node's own view too
				}
				if !c.json {
					fmt.Fprintf(sio.out, "switched to %s in %v\n", args[0], time.Since(start).Round(time.Millisecond))
				}
			} else if out, _, err = cl.do(ctx, http.MethodGet, "/v1/cache/mode", nil); err != nil {
				return err
			}
			return printCacheMode(sio.out, out, c.json)
		}
	}
}

// modeDoer sends modeswitch's requests with the client's credentials.
func (c *client) modeDoer() modeswitch.Doer {
	return func(ctx context.Context, method string, body []byte) (int, []byte, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+modeswitch.Path, rd)
		if err != nil {
			return 0, nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		c.authorize(req)
		resp, err := c.hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, out, err
	}
}

func printCacheMode(w io.Writer, out []byte, asJSON bool) error {
	if asJSON {
		_, err := w.Write(out)
		return err
	}
	var v server.CacheModeView
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("unreadable answer: %w", err)
	}
	fmt.Fprintf(w, "cluster: %s\n", v.Cluster)
	fmt.Fprintf(w, "node:    %s\n", v.Node)
	return nil
}
