package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/internal/cli"
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
				body, _ := json.Marshal(map[string]string{"mode": args[0]})
				start := time.Now()
				if out, _, err = cl.do(ctx, http.MethodPut, "/v1/cache/mode", body); err != nil {
					// An answer that leaves the outcome open (a leader
					// lost mid-commit, a timeout) may hide a switch that
					// goes on: follow the record if it names MODE.
					if out, err = awaitMode(ctx, cl, args[0], err); err != nil {
						return err
					}
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

// awaitMode waits until the cluster runs mode stably, if its record names
// mode after a switch answered putErr; otherwise it returns putErr.
func awaitMode(ctx context.Context, cl *client, mode string, putErr error) ([]byte, error) {
	for {
		out, _, err := cl.do(ctx, http.MethodGet, "/v1/cache/mode", nil)
		if err == nil {
			var v server.CacheModeView
			if json.Unmarshal(out, &v) == nil {
				switch {
				case v.Cluster.Mode != mode:
					return nil, putErr
				case v.Cluster.Phase == "stable":
					return out, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w; the switch to %s was not seen to complete: %w", putErr, mode, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
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
