package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/dirlock"
)

func init() {
	register(
		&command{name: "snapshot save", args: "FILE", min: 1, max: 1, bind: bindSnapshot("save"),
			summary: "Write a consistent copy of the consistent store, taken through the raft leader, to FILE. Needs an administrator's credentials."},
		&command{name: "snapshot restore", args: "FILE", min: 1, max: 1, bind: bindSnapshot("restore"),
			summary: "Replace the whole consistent store of the running cluster with FILE's (through the leader). Needs an administrator's credentials."},
		&command{name: "snapshot inspect", args: "FILE", min: 1, max: 1, bind: bindSnapshot("inspect"),
			summary: "Check FILE and print what it holds (no node needed)."},
		&command{name: "raft peers", bind: bindRaft("peers"),
			summary: "List the raft configuration: servers, addresses, voters, the leader, and each one's membership state. Needs an administrator's credentials."},
		&command{name: "raft remove-peer", args: "NAME", min: 1, max: 1, bind: bindRaft("remove-peer"),
			summary: "Remove a server that will not come back (it must not be alive); a healthy member takes its place as voter. Needs an administrator's credentials."},
		&command{name: "raft reset", bind: bindRaftReset,
			summary: "Move a stopped node's raft state (DATA-DIR/raft) aside, for a node whose raft log is damaged: started again, the node rejoins its group and fetches the state from the leader. --data-dir is the node's own."},
	)
}

func bindSnapshot(op string) func(*cli.Set) runFunc {
	return func(s *cli.Set) runFunc {
		c := bindClient(s)
		return func(ctx context.Context, sio stdio, args []string) error {
			file := args[0]
			if op == "inspect" {
				return snapshotInspect(file, c.json, sio.out)
			}
			cl, err := c.client(sio.in, true)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if op == "save" {
				return snapshotSave(ctx, cl, file, c.json, sio.out)
			}
			return snapshotRestore(ctx, cl, file, c.json, sio.out)
		}
	}
}

func snapshotInspect(file string, asJSON bool, stdout io.Writer) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	info, _, err := cp.DecodeSnapshot(b)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return printSnapshotInfo(stdout, asJSON, "", info)
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

func bindRaft(op string) func(*cli.Set) runFunc {
	return func(s *cli.Set) runFunc {
		c := bindClient(s)
		return func(ctx context.Context, sio stdio, args []string) error {
			cl, err := c.client(sio.in, true)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if op == "remove-peer" {
				if _, _, err := cl.do(ctx, http.MethodDelete, "/v1/raft/peers/"+url.PathEscape(args[0]), nil); err != nil {
					return err
				}
				fmt.Fprintf(sio.out, "removed %s from the raft configuration\n", args[0])
				return nil
			}
			return raftPeers(ctx, cl, c.json, sio.out)
		}
	}
}

func raftPeers(ctx context.Context, cl *client, asJSON bool, stdout io.Writer) error {
	out, _, err := cl.do(ctx, http.MethodGet, "/v1/raft/peers", nil)
	if err != nil {
		return err
	}
	if asJSON {
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

func bindRaftReset(s *cli.Set) runFunc {
	var dataDir string
	s.String(&dataDir, "data-dir", "the stopped node's own data directory")
	return func(_ context.Context, sio stdio, _ []string) error {
		if dataDir == "" {
			return usagef("--data-dir is required: the node's own data directory")
		}
		return raftReset(dataDir, sio.out)
	}
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
