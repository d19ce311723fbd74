package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/internal/localcluster"
	"github.com/shoal-dev/shoal/internal/server"
)

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "HTTP address of the node to ask (default: the nodes in <data-dir>/cluster.json)")
	dataDir := fs.String("data-dir", "shoal-data", "cluster directory written by 'shoal up'")
	all := fs.Bool("all", false, "ask every node in cluster.json and show each one's view")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for a node")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	targets := []string{*addr}
	if *addr == "" {
		var cf clusterFile
		path := filepath.Join(*dataDir, "cluster.json")
		if err := readJSONFile(path, &cf); err != nil {
			return fmt.Errorf("no --addr given and %s is unreadable (is 'shoal up' running?): %w", path, err)
		}
		targets = targets[:0]
		for _, n := range cf.Nodes {
			targets = append(targets, n.HTTP)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var views []*server.ClusterView
	var errs []error
	for _, t := range targets {
		v, err := localcluster.FetchView(ctx, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		views = append(views, v)
		if !*all {
			break
		}
	}
	if len(views) == 0 {
		return fmt.Errorf("no node answered: %w", errors.Join(errs...))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if *all {
			return enc.Encode(views)
		}
		return enc.Encode(views[0])
	}
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printView(stdout, v)
	}
	for _, err := range errs {
		fmt.Fprintln(stderr, "shoal status:", err)
	}
	return nil
}

func printView(w io.Writer, v *server.ClusterView) {
	leader := v.Raft.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "members as seen by %s (raft: %s, leader %s, term %d):\n", v.Self, v.Raft.Role, leader, v.Raft.Term)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tRAFT\tGOSSIP\tRPC\tRAFT ADDR\tHTTP\tCACHE MODE\tVERSION")
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
