package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/server"
)

func init() {
	register(&command{name: "status", summary: "Show the cluster's members as a node sees them.", bind: bindStatus})
}

func bindStatus(s *cli.Set) runFunc {
	c := bindClient(s)
	var all bool
	timeout := 3 * time.Second
	s.Bool(&all, "all", "ask every node in cluster.json and show each one's view")
	s.Duration(&timeout, "timeout", "how long to wait for a node")
	return func(ctx context.Context, sio stdio, _ []string) error {
		targets, err := statusTargets(c, all)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		views, errs := fetchViews(ctx, sio, c, targets, all)
		if len(views) == 0 {
			return fmt.Errorf("no node answered: %w", errors.Join(errs...))
		}
		if c.json {
			enc := json.NewEncoder(sio.out)
			enc.SetIndent("", "  ")
			if all {
				return enc.Encode(views)
			}
			return enc.Encode(views[0])
		}
		for i, v := range views {
			if i > 0 {
				fmt.Fprintln(sio.out)
			}
			printView(sio.out, v)
		}
		for _, err := range errs {
			fmt.Fprintln(sio.err, "shoal status:", err)
		}
		return nil
	}
}

// statusTargets are the nodes to ask: --addr, or those of cluster.json.
func statusTargets(c *clientSettings, all bool) ([]string, error) {
	if c.addr != "" {
		return []string{c.addr}, nil
	}
	var cf clusterFile
	path := filepath.Join(c.dataDir, "cluster.json")
	if err := readJSONFile(path, &cf); err != nil {
		return nil, fmt.Errorf("no --addr given and %s is unreadable (is 'shoal up' running?): %w", path, err)
	}
	var targets []string
	for _, n := range cf.Nodes {
		targets = append(targets, n.HTTP)
	}
	return targets, nil
}

// fetchViews asks the targets for their view, all of them or until one
// answers.
func fetchViews(ctx context.Context, sio stdio, c *clientSettings, targets []string, all bool) ([]*server.ClusterView, []error) {
	var views []*server.ClusterView
	var errs []error
	for _, t := range targets {
		cs := *c
		cs.addr = t
		v, err := fetchView(ctx, sio, &cs)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		views = append(views, v)
		if !all {
			break
		}
	}
	return views, errs
}

func fetchView(ctx context.Context, sio stdio, c *clientSettings) (*server.ClusterView, error) {
	cl, err := c.client(sio.in, false)
	if err != nil {
		return nil, err
	}
	out, _, err := cl.do(ctx, http.MethodGet, "/v1/cluster", nil)
	if err != nil {
		return nil, err
	}
	var v server.ClusterView
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", c.addr, err)
	}
	return &v, nil
}

func printView(w io.Writer, v *server.ClusterView) {
	leader := v.Raft.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "members as seen by %s (raft: %s, leader %s, term %d; cache mode %s):\n", v.Self, v.Raft.Role, leader, v.Raft.Term, v.Cache)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tRAFT\tGOSSIP\tRPC\tRAFT ADDR\tHTTP\tSTARTED AS\tVERSION")
	for _, m := range v.Members {
		self, role := "", m.RaftRole
		if m.Name == v.Self {
			self = " *"
		}
		if role == "" {
			role = "-"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, self, m.State, role, m.Gossip, m.RPC, m.Raft, m.HTTP, m.CacheMode, m.Version)
	}
	tw.Flush()
}

func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
