package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/scheduler"
)

const jobsUsage = `usage: shoal jobs <list|show|run-now|pause|resume|delete> [flags] [ID]

  shoal jobs list          list the jobs: this node's local ones and the cluster's
  shoal jobs show ID       one job with its run history
  shoal jobs run-now ID    run a job once as soon as possible (on one node)
  shoal jobs pause ID      stop a job's scheduled runs
  shoal jobs resume ID     restart them (a missed fire time runs once)
  shoal jobs delete ID     remove a job

flags: --addr HOST:PORT (a node's HTTP address;
default: the first node in <data-dir>/cluster.json), --data-dir, --json,
--stale (list the node's own copies without asking the raft leader).
`

func runJobs(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" {
		fmt.Fprint(stdout, jobsUsage)
		return nil
	}
	op := args[0]
	fs := flag.NewFlagSet("jobs "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "HTTP address of a node")
	dataDir := fs.String("data-dir", "shoal-data", "cluster directory written by 'shoal up'")
	asJSON := fs.Bool("json", false, "print the JSON answer")
	stale := fs.Bool("stale", false, "list: the node's own copies, without asking the store (works without a raft leader)")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	method, path, err := jobsRequest(op, pos)
	if err != nil {
		return err
	}
	if *stale && op == "list" {
		path += "?stale=true"
	}
	node, err := kvAddr(*addr, *dataDir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := httpc.Do(ctx, method, node, path, nil)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(out)
		return err
	}
	return printJobs(stdout, op, out)
}

// parseInterspersed parses flags before and after the positional
// arguments ("show ID --json" as well as "--json show ID").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// jobsRequest is the HTTP request for an operation.
func jobsRequest(op string, pos []string) (method, path string, err error) {
	if op == "list" {
		if len(pos) != 0 {
			return "", "", usagef("jobs list takes no arguments\n%s", jobsUsage)
		}
		return http.MethodGet, "/v1/jobs", nil
	}
	switch op {
	case "show", "run-now", "pause", "resume", "delete":
	default:
		return "", "", usagef("jobs: unknown operation %q\n%s", op, jobsUsage)
	}
	if len(pos) != 1 {
		return "", "", usagef("jobs %s: want one job ID\n%s", op, jobsUsage)
	}
	path = "/v1/jobs/" + url.PathEscape(pos[0])
	switch op {
	case "show":
		return http.MethodGet, path, nil
	case "delete":
		return http.MethodDelete, path, nil
	}
	return http.MethodPost, path + "/" + op, nil
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
