package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/scheduler"
)

func init() {
	for _, op := range []struct{ name, args, summary string }{
		{"list", "", "List the jobs: this node's local ones and the cluster's."},
		{"show", "ID", "Show one job with its run history."},
		{"run-now", "ID", "Run a job once as soon as possible (on one node)."},
		{"pause", "ID", "Stop a job's scheduled runs."},
		{"resume", "ID", "Restart a job's scheduled runs (a missed fire time runs once)."},
		{"delete", "ID", "Remove a job."},
	} {
		n := 1
		if op.args == "" {
			n = 0
		}
		register(&command{name: "jobs " + op.name, args: op.args, min: n, max: n, summary: op.summary,
			bind: func(s *cli.Set) runFunc {
				c := bindClient(s)
				var stale bool
				if op.name == "list" {
					s.Bool(&stale, "stale", "the node's own copies, without asking the store (works without a raft leader)")
				}
				return func(ctx context.Context, sio stdio, args []string) error {
					return runJobs(ctx, sio, c, op.name, args, stale)
				}
			}})
	}
}

func runJobs(ctx context.Context, sio stdio, c *clientSettings, op string, pos []string, stale bool) error {
	method, path := jobsRequest(op, pos)
	if stale {
		path += "?stale=true"
	}
	cl, err := c.client(sio.in, false)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, _, err := cl.do(ctx, method, path, nil)
	if err != nil {
		return err
	}
	if c.json {
		_, err := sio.out.Write(out)
		return err
	}
	return printJobs(sio.out, op, out)
}

// jobsRequest is the HTTP request for an operation.
func jobsRequest(op string, pos []string) (method, path string) {
	if op == "list" {
		return http.MethodGet, "/v1/jobs"
	}
	path = "/v1/jobs/" + url.PathEscape(pos[0])
	switch op {
	case "show":
		return http.MethodGet, path
	case "delete":
		return http.MethodDelete, path
	}
	return http.MethodPost, path + "/" + op
}

func printJobs(w io.Writer, op string, out []byte) error {
	switch op {
	case "list":
		var list []scheduler.Status
		if err := json.Unmarshal(out, &list); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tMODE\tSTATE\tNEXT RUN\tSCHEDULE\tLAST RUN")
		for _, st := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", st.ID, st.Mode, st.State, fmtTime(st.NextRun), st.Schedule, lastRun(st))
		}
		return tw.Flush()
	case "delete":
		fmt.Fprintln(w, "deleted")
		return nil
	}
	var st scheduler.Status
	if err := json.Unmarshal(out, &st); err != nil {
		return err
	}
	return printStatus(w, st)
}

func printStatus(w io.Writer, st scheduler.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", st.ID)
	fmt.Fprintf(tw, "runner:\t%s (registered on: %s)\n", st.Runner, orNone(strings.Join(st.Runners, ", ")))
	fmt.Fprintf(tw, "mode:\t%s\n", st.Mode)
	fmt.Fprintf(tw, "schedule:\t%s\n", st.Schedule)
	fmt.Fprintf(tw, "state:\t%s\n", st.State)
	fmt.Fprintf(tw, "next run:\t%s\n", fmtTime(st.NextRun))
	if !st.RunNowAt.IsZero() {
		fmt.Fprintf(tw, "run-now requested:\t%s\n", fmtTime(st.RunNowAt))
	}
	fmt.Fprintf(tw, "misfires:\t%d\n", st.Misfires)
	if st.Version != 0 {
		fmt.Fprintf(tw, "version:\t%d\n", st.Version)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.History) == 0 {
		fmt.Fprintln(w, "\nno runs yet")
		return nil
	}
	fmt.Fprintln(w, "\nruns (oldest first):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIRE TIME\tNODE\tOUTCOME\tLATE\tTOOK\tERROR")
	for _, r := range st.History {
		took := "-"
		if !r.End.IsZero() {
			took = r.End.Sub(r.Start).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", fmtTime(r.FireTime), r.Node, r.Outcome,
			r.Start.Sub(r.FireTime).Round(time.Millisecond), took, firstLine(r.Error))
	}
	return tw.Flush()
}

func lastRun(st scheduler.Status) string {
	if len(st.History) == 0 {
		return "-"
	}
	r := st.History[len(st.History)-1]
	return fmt.Sprintf("%s on %s at %s", r.Outcome, r.Node, fmtTime(r.FireTime))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func orNone(s string) string {
	if s == "" {
		return "no live node"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
