package localcluster

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// failure describes a node that exited when it should not have: its exit
// status, the cause when it is a known one (a port in use, a data
// directory locked by another process), and an excerpt of the lines this
// process wrote to its log, with a panic kept whole.
func (p *Proc) failure(what string) error {
	lines := p.OwnLines()
	msg := fmt.Sprintf("%s %s (%v)", p.Name, what, p.err)
	if cause := Cause(lines); cause != "" {
		msg += ": " + cause
	}
	return fmt.Errorf("%s; %s:\n%s", msg, p.Log, strings.Join(Excerpt(lines, 15), "\n"))
}

// OwnLines returns the lines this process (not an earlier one started
// with the same log file) wrote to its log.
func (p *Proc) OwnLines() []string {
	f, err := os.Open(p.Log)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(p.logStart, io.SeekStart); err != nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// Excerpt picks about n lines of a failed process's output: the last n,
// or, when it panicked or hit a fatal runtime error, a few lines before
// the panic, the panic line and the first lines of its stack (the panic
// line is what explains the exit, and a stack trace would push it out of
// the last n).
func Excerpt(lines []string, n int) []string {
	for i, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			from, to := max(0, i-n/3), min(len(lines), i+n-n/3)
			out := append([]string(nil), lines[from:to]...)
			if to < len(lines) {
				out = append(out, "... ("+strconv.Itoa(len(lines)-to)+" more lines)")
			}
			return out
		}
	}
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

var (
	addrInUse = regexp.MustCompile(`(?:listen|bind)(?: (?:tcp|udp)[46]?)? ([^ ]+?):? bind: address already in use`)
	dirLocked = regexp.MustCompile(`data directory in use: ([^ ]+) is held by (?:process (\d+)|another process)`)
)

// Cause names why a node failed to start when its lines say it is one of
// the usual reasons: an address in use, or a data directory locked by
// another process. Empty otherwise.
func Cause(lines []string) string {
	for _, l := range lines {
		if m := addrInUse.FindStringSubmatch(l); m != nil {
			return fmt.Sprintf("address %s is already in use by another process (another 'shoal up' or 'make run'? stop it, or start on other ports with --base-port and --http-base)", m[1])
		}
		if m := dirLocked.FindStringSubmatch(l); m != nil {
			holder := "another process"
			if m[2] != "" {
				holder = "process " + m[2]
			}
			return fmt.Sprintf("its data directory %s is locked by %s (another 'shoal up' or 'make run' on the same --data-dir? stop it, or use another --data-dir)", m[1], holder)
		}
	}
	return ""
}
