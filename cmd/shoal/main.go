// Command shoal runs and operates shoal clusters: 'shoal help' lists what
// it does. Every command reads its settings the same way (package
// internal/cli): flags, then SHOAL_<FLAG> environment variables, then the
// YAML file named by --config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/server"
)

func main() {
	os.Exit(runIO(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// stdio is what a command reads and writes.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// runFunc runs a command with its positional arguments, once its flags
// are parsed.
type runFunc func(ctx context.Context, sio stdio, args []string) error

// command is one thing shoal does.
type command struct {
	name    string // "node", or a group's and an operation's: "kv get"
	args    string // the positional arguments' synopsis
	min     int    // positional arguments: at least min,
	max     int    // at most max (-1: any number)
	summary string
	// bind binds the command's flags onto a fresh value of its settings
	// in s and returns what runs it; it has no other effect.
	bind func(s *cli.Set) runFunc
}

// groups are the commands with operations, and what they are for.
var groups = []struct{ name, summary string }{
	{"node", "run one node of a cluster"},
	{"up", "start a local cluster of N nodes on loopback and watch it"},
	{"status", "show the cluster's members as a node sees them"},
	{"kv", "read and write the consistent store"},
	{"cache", "show and switch the cluster's cache mode"},
	{"snapshot", "save and restore the consistent store"},
	{"raft", "list and remove raft peers, reset a damaged raft log"},
	{"tls", "create the cluster's certificate authority and issue node certificates"},
	{"seed", "fill an empty database with a generated data set"},
	{"user", "add users and grant permissions"},
	{"token", "create and revoke access tokens"},
	{"jobs", "list and control the scheduler's jobs"},
	{"bench", "run an experiment"},
	{"version", "print the version"},
}

// commands is every command; filled by init functions beside each
// command's code.
var commands []*command

func register(cs ...*command) { commands = append(commands, cs...) }

func init() {
	register(&command{name: "version", summary: "Print the version.", bind: func(*cli.Set) runFunc {
		return func(_ context.Context, sio stdio, _ []string) error {
			fmt.Fprintln(sio.out, "shoal", server.Version)
			return nil
		}
	}})
}

func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, os.Stdin, stdout, stderr)
}

func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	sio := stdio{stdin, stdout, stderr}
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "--version", "-version", "-v":
		args = []string{"version"}
	}
	c, rest, err := find(args)
	if errors.Is(err, flag.ErrHelp) {
		groupUsage(stdout, args[0])
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "shoal: %v\n", err)
		return 2
	}
	return exit(c.run(rest, sio), c.name, stderr)
}

// find is the command args name and the arguments that follow it.
func find(args []string) (*command, []string, error) {
	name := args[0]
	if len(args) > 1 { // an operation of a command that is also a group: "up restart"
		for _, c := range commands {
			if c.name == name+" "+args[1] {
				return c, args[2:], nil
			}
		}
	}
	for _, c := range commands {
		if c.name == name {
			return c, args[1:], nil
		}
	}
	if !isGroup(name) {
		return nil, nil, fmt.Errorf("unknown command %q; run 'shoal help' for the list", name)
	}
	if len(args) == 1 || isHelp(args[1]) {
		return nil, nil, flag.ErrHelp
	}
	for _, c := range commands {
		if c.name == name+" "+args[1] {
			return c, args[2:], nil
		}
	}
	return nil, nil, fmt.Errorf("%s: unknown operation %q; run 'shoal %s help' for the list", name, args[1], name)
}

func isGroup(name string) bool {
	for _, c := range commands {
		if strings.HasPrefix(c.name, name+" ") {
			return true
		}
	}
	return false
}

func isHelp(a string) bool { return a == "help" || a == "-h" || a == "-help" || a == "--help" }

// exit prints err as main reports it and returns the exit status: 0, 2
// for a mistake in the command line (with how to get help), 1 otherwise.
func exit(err error, cmd string, stderr io.Writer) int {
	var ue *cli.UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "shoal %s: %v\nRun 'shoal %s -h' for help.\n", cmd, ue.Msg, cmd)
		return 2
	}
	fmt.Fprintln(stderr, "shoal:", err)
	return 1
}

// newSet is the flag set of c.
func (c *command) newSet() (*cli.Set, runFunc) {
	s := cli.New(c.name, c.args, c.summary)
	return s, c.bind(s)
}

// run parses the command's settings and arguments and runs it, until
// SIGINT or SIGTERM.
func (c *command) run(args []string, sio stdio) error {
	s, fn := c.newSet()
	pos, err := s.Parse(args, cli.Options{Known: knownFlag})
	if errors.Is(err, flag.ErrHelp) {
		s.Help(sio.out)
		return err
	}
	if err != nil {
		return err
	}
	if len(pos) < c.min {
		return usagef("want %s", c.args)
	}
	if c.max >= 0 && len(pos) > c.max {
		return usagef("unexpected argument %q (want %s)", pos[c.max], orNothing(c.args))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return fn(ctx, sio, pos)
}

func orNothing(s string) string {
	if s == "" {
		return "no arguments"
	}
	return s
}

// knownFlag reports whether any command has a flag of that name: a
// configuration file may be shared by several commands.
func knownFlag(name string) bool {
	for _, c := range commands {
		s, _ := c.newSet()
		if s.Lookup(name) != nil {
			return true
		}
	}
	return false
}

// usagef is a mistake in the command line.
func usagef(format string, args ...any) error {
	return &cli.UsageError{Msg: fmt.Sprintf(format, args...)}
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: shoal <command> [flags]\n\ncommands:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, g := range groups {
		fmt.Fprintf(tw, "  %s\t%s\n", g.name, g.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Run 'shoal <command> -h' for a command's flags, 'shoal <command> help' for
a command's operations. Every flag can also be set from the environment
(--cache-mode is $SHOAL_CACHE_MODE) or in a YAML file given with --config
(cache-mode: distributed); a flag wins over the environment, which wins
over the file. 'shoal node --print-config' shows where each value came
from. 'shoal --version' prints the version.
`)
}

// groupUsage lists a group's operations.
func groupUsage(w io.Writer, group string) {
	fmt.Fprintf(w, "usage: shoal %s <operation> [flags] [arguments]\n\n", group)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		if op, ok := strings.CutPrefix(c.name, group+" "); ok {
			fmt.Fprintf(tw, "  shoal %s %s %s\t%s\n", group, op, c.args, firstSentence(c.summary))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun 'shoal %s <operation> -h' for its flags.\n", group)
}

func firstSentence(s string) string {
	if i := strings.Index(s, ". "); i >= 0 {
		return s[:i+1]
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
