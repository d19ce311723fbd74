// Command shoal runs and operates shoal clusters.
//
//	shoal node    run one node
//	shoal up      start a local cluster of N nodes and watch it
//	shoal status  show the members as a node sees them
//	shoal kv      read and write the consistent store
//	shoal snapshot save and restore the consistent store
//	shoal raft    list and remove raft peers; reset a damaged raft log
//	shoal bench   run an experiment
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/shoal-dev/shoal/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: shoal <command> [flags]

commands:
  node     run one node of a cluster
  up       start a local cluster of N nodes on loopback and watch it
  status   show the cluster's members as a node sees them
  kv       read and write the consistent store (shoal kv help)
  snapshot save and restore the consistent store (shoal snapshot help)
  raft     list and remove raft peers, reset a damaged raft log (shoal raft help)
  seed     fill an empty database with a generated data set
  user     add users and grant permissions (shoal user add|grant)
  token    create and revoke access tokens (shoal token create|revoke)
  jobs     list and control the scheduler's jobs (shoal jobs help)
  bench    run an experiment (shoal bench help)
  version  print the version

Every flag can also be set from the environment: --cache-mode is
SHOAL_CACHE_MODE. Run 'shoal <command> -h' for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "node":
		err = runNode(rest, stderr)
	case "up":
		err = runUp(rest, stdout, stderr)
	case "status":
		err = runStatus(rest, stdout, stderr)
	case "kv":
		err = runKV(rest, stdout, stderr)
	case "snapshot":
		err = runSnapshot(rest, os.Stdin, stdout, stderr)
	case "raft":
		err = runRaft(rest, os.Stdin, stdout, stderr)
	case "bench":
		err = runBench(rest, stdout, stderr)
	case "seed":
		err = runSeed(rest)
	case "user":
		err = runUser(rest, os.Stdin, stdout, stderr)
	case "token":
		err = runToken(rest, stdout, stderr)
	case "jobs":
		err = runJobs(rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "shoal", server.Version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "shoal: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintln(stderr, "shoal:", err)
		return 2
	}
	fmt.Fprintln(stderr, "shoal:", err)
	return 1
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// parseFlags parses args, then fills every flag not given on the command
// line from its environment variable (SHOAL_ and the flag's name in upper
// case with - as _). A bad value, from either place, is a usageError naming
// where it came from.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: shoal %s [flags]\n\nflags (each also from $SHOAL_<NAME>):\n", fs.Name())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		v, ok := os.LookupEnv(env)
		if set[f.Name] || !ok || err != nil {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = usagef("$%s=%q: %v", env, v, e)
		}
	})
	return err
}

func envName(flagName string) string {
	return "SHOAL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// listFlag is a repeatable string flag; from the environment it takes a
// comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
