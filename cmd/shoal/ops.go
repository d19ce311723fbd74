package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/dirlock"
	"github.com/shoal-dev/shoal/internal/httpc"
)

const snapshotUsage = `usage: shoal snapshot <save|restore|inspect> [flags] FILE

  shoal snapshot save FILE      write a consistent copy of the consistent store, taken
                                through the raft leader, to FILE
  shoal snapshot restore FILE   replace the whole consistent store of the running
                                cluster with FILE's (through the leader)
  shoal snapshot inspect FILE   check FILE and print what it holds (no node needed)

flags (before FILE): --addr HOST:PORT (a node's HTTP address; default: the first node
in <data-dir>/cluster.json), --data-dir, and an administrator's credentials:
--user NAME with the password in $SHOAL_PASSWORD or on stdin (--password-stdin),
or --token TOKEN (or $SHOAL_TOKEN).
`

const raftUsage = `usage: shoal raft <peers|remove-peer|reset> [flags] [NAME]

  shoal raft peers              list the raft configuration: servers, addresses,
                                voters, the leader, and each one's membership state
  shoal raft remove-peer NAME   remove a server that will not come back (it must not
                                be alive); a healthy member takes its place as voter
  shoal raft reset --data-dir DIR
                                move a stopped node's raft state (DIR/raft) aside, for
                                a node whose raft log is damaged: started again, the
                                node rejoins its group and fetches the state from the
                                leader. DIR is the node's own --data-dir.

peers and remove-peer take --addr, --data-dir (the cluster directory of 'shoal up')
and an administrator's credentials, as 'shoal snapshot' does.
`

// opsFlags are the flags shared by the operations commands.
type opsFlags struct {
	addr, dataDir, user, token string
	passwordStdin, asJSON      bool
}

func (f *opsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "", "HTTP address of a node")
	fs.StringVar(&f.dataDir, "data-dir", "shoal-data", "cluster directory written by 'shoal up' (raft reset: the node's own data directory)")
	fs.StringVar(&f.user, "user", os.Getenv("SHOAL_USER"), "an administrator's name (password in $SHOAL_PASSWORD or --password-stdin)")
	fs.StringVar(&f.token, "token", os.Getenv("SHOAL_TOKEN"), "an administrator's access token")
	fs.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from standard input")
	fs.BoolVar(&f.asJSON, "json", false, "print the JSON answer")
}

// parseOps parses an operation's flags and checks its argument count.
func parseOps(name string, args []string, nargs int, usage string, stderr io.Writer) (*opsFlags, []string, error) {
	var f opsFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, usageError{err.Error()}
	}
	if fs.NArg() != nargs {
		return nil, nil, usagef("%s: want %d argument(s)\n%s", name, nargs, usage)
	}
	return &f, fs.Args(), nil
}

// client is an administrator's HTTP client of a node. It follows the
// redirects to the leader with the same credentials: those go only to
// members' addresses that the node named.
type client struct {
	base, user, secret, token string
	hc                        *http.Client
}

func (f *opsFlags) client(stdin io.Reader) (*client, error) {
	node, err := kvAddr(f.addr, f.dataDir)
	if err != nil {
		return nil, err
	}
	c := &client{base: httpc.Base(node), user: f.user, token: f.token}
	if f.user != "" {
		c.secret = os.Getenv("SHOAL_PASSWORD")
		if f.passwordStdin {
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			c.secret = strings.TrimRight(line, "\r\n")
		}
	}
	if c.user == "" && c.token == "" {
		return nil, usagef("an administrator's credentials are needed: --user NAME (password in $SHOAL_PASSWORD or --password-stdin) or --token")
	}
	c.hc = &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 3 {
			return errors.New("redirected three times: the leader keeps changing; try again")
		}
		c.authorize(req)
		return nil
	}}
	return c, nil
}

func (c *client) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	} else {
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
		var e struct{ Error string }
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, nil, fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return nil, nil, fmt.Errorf("%s: %s: %s", req.URL.Host, resp.Status, bytes.TrimSpace(out))
	}
	return out, resp.Header, nil
}

func runSnapshot(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" {
		fmt.Fprint(stdout, snapshotUsage)
		return nil
	}
	op := args[0]
	f, pos, err := parseOps("snapshot "+op, args[1:], 1, snapshotUsage, stderr)
	if err != nil {
		return err
	}
	file := pos[0]
	if op == "inspect" {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		info, _, err := cp.DecodeSnapshot(b)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		return printSnapshotInfo(stdout, f.asJSON, "", info)
	}
	if op != "save" && op != "restore" {
		return usagef("snapshot: unknown operation %q\n%s", op, snapshotUsage)
	}
	c, err := f.client(stdin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if op == "save" {
		return snapshotSave(ctx, c, file, f.asJSON, stdout)
	}
	return snapshotRestore(ctx, c, file, f.asJSON, stdout)
}

// snapshotSave fetches a snapshot, checks it, and writes it to file
// atomically (a temporary file beside it, synced, then renamed).
func snapshotSave(ctx context.Context, c *client, file string, asJSON bool, stdout io.Writer) error {
	b, _, err := c.do(ctx, http.MethodGet, "/v1/snapshot", nil)
	if err != nil {
		return err
	}
	info, _, err := cp.DecodeSnapshot(b)
	if err != nil {
		return fmt.Errorf("the node sent a bad snapshot: %w", err)
	}
	if err := writeFileSynced(file, b); err != nil {
		return err
	}
	return printSnapshotInfo(stdout, asJSON, "saved "+file, info)
}

func snapshotRestore(ctx context.Context, c *client, file string, asJSON bool, stdout io.Writer) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if _, _, err := cp.DecodeSnapshot(b); err != nil { // say so before sending it
		return fmt.Errorf("%s: %w", file, err)
	}
	out, _, err := c.do(ctx, http.MethodPut, "/v1/snapshot", b)
	if err != nil {
		return err
	}
	var info cp.SnapshotInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return err
	}
	return printSnapshotInfo(stdout, asJSON, "restored "+file, info)
}

func printSnapshotInfo(w io.Writer, asJSON bool, what string, info cp.SnapshotInfo) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	if what != "" {
		what += ": "
	}
	fmt.Fprintf(w, "%sindex %d, term %d, %d keys, %d leases, taken %s by %s\n", what,
		info.Index, info.Term, info.Keys, info.Leases, info.Taken.Format(time.RFC3339), info.Leader)
	return nil
}

func writeFileSynced(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func runRaft(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" {
		fmt.Fprint(stdout, raftUsage)
		return nil
	}
	op := args[0]
	nargs := map[string]int{"peers": 0, "remove-peer": 1, "reset": 0}
	n, ok := nargs[op]
	if !ok {
		return usagef("raft: unknown operation %q\n%s", op, raftUsage)
	}
	f, pos, err := parseOps("raft "+op, args[1:], n, raftUsage, stderr)
	if err != nil {
		return err
	}
	if op == "reset" {
		return raftReset(f.dataDir, stdout)
	}
	c, err := f.client(stdin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if op == "remove-peer" {
		if _, _, err := c.do(ctx, http.MethodDelete, "/v1/raft/peers/"+url.PathEscape(pos[0]), nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s from the raft configuration\n", pos[0])
		return nil
	}
	out, _, err := c.do(ctx, http.MethodGet, "/v1/raft/peers", nil)
	if err != nil {
		return err
	}
	if f.asJSON {
		_, err := stdout.Write(out)
		return err
	}
	var peers []cp.Peer
	if err := json.Unmarshal(out, &peers); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSUFFRAGE\tLEADER\tMEMBER")
	for _, p := range peers {
		member := p.Member
		if member == "" {
			member = "(not a member)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", p.Name, p.Address, p.Suffrage, p.Leader, member)
	}
	return tw.Flush()
}

// raftReset moves a stopped node's raft state aside. It refuses while a
// process holds the data directory.
func raftReset(dataDir string, stdout io.Writer) error {
	raftDir := filepath.Join(dataDir, "raft")
	if _, err := os.Stat(raftDir); err != nil {
		return fmt.Errorf("raft reset: %w (give the node's own --data-dir)", err)
	}
	lock, err := dirlock.Acquire(context.Background(), dataDir, 0)
	if err != nil {
		return fmt.Errorf("raft reset: %w", err)
	}
	defer lock.Release()
	aside := fmt.Sprintf("%s.damaged-%s", raftDir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(raftDir, aside); err != nil {
		return fmt.Errorf("raft reset: %w", err)
	}
	fmt.Fprintf(stdout, "moved %s to %s\nstart the node again: it rejoins its group and fetches the state from the leader.\n"+
		"(if it was the only voter, restore the store from a snapshot instead: shoal snapshot restore FILE)\n", raftDir, aside)
	return nil
}
