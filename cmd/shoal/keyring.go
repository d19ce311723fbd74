package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/server"
)

const keyringNote = " Applied on every member by the node asked; needs an administrator's credentials."

func init() {
	register(
		&command{name: "keyring list", bind: bindKeyring(cluster.KeyringList),
			summary: "List the gossip encryption keys of every member: how many hold each key and use it as their primary." + keyringNote},
		&command{name: "keyring install", args: "KEY", min: 1, max: 1, bind: bindKeyring(cluster.KeyringInstall),
			summary: "Install gossip key KEY (base64) on every member: they decrypt with it from then on. The first step of a rotation." + keyringNote},
		&command{name: "keyring use", args: "KEY", min: 1, max: 1, bind: bindKeyring(cluster.KeyringUse),
			summary: "Make installed key KEY every member's primary: they encrypt with it. Install it on every member first." + keyringNote},
		&command{name: "keyring remove", args: "KEY", min: 1, max: 1, bind: bindKeyring(cluster.KeyringRemove),
			summary: "Remove gossip key KEY from every member (not a member's primary). The last step of a rotation." + keyringNote},
		&command{name: "keyring generate", bind: func(*cli.Set) runFunc { return generateGossipKey },
			summary: "Print a new random gossip key (32 bytes, base64) for --gossip-key or 'shoal keyring install'."},
	)
}

// gossipKeyValue binds a gossip key given as base64 onto a []byte field;
// its text, in the help and --print-config, never shows the key.
type gossipKeyValue struct{ k *[]byte }

func (v gossipKeyValue) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		*v.k = nil // no key: what String prints for none (a configuration file's "gossip-key: ''")
		return nil
	}
	k, err := cluster.DecodeGossipKey(s)
	if err != nil {
		return err
	}
	*v.k = k
	return nil
}

func (v gossipKeyValue) String() string {
	if v.k == nil || len(*v.k) == 0 {
		return ""
	}
	return fmt.Sprintf("(hidden: %d bytes)", len(*v.k))
}

func generateGossipKey(_ context.Context, sio stdio, _ []string) error {
	k, err := cluster.GenerateGossipKey()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(sio.out, cluster.EncodeGossipKey(k))
	return err
}

func bindKeyring(op string) func(*cli.Set) runFunc {
	return func(s *cli.Set) runFunc {
		c := bindClient(s)
		timeout := time.Minute
		s.Duration(&timeout, "timeout", "how long to wait for every member")
		return func(ctx context.Context, sio stdio, args []string) error {
			method, path, body := http.MethodGet, "/v1/keyring", []byte(nil)
			if op != cluster.KeyringList {
				if _, err := cluster.DecodeGossipKey(args[0]); err != nil {
					return usagef("KEY: %v", err)
				}
				method, path = http.MethodPost, "/v1/keyring/"+op
				body, _ = json.Marshal(map[string]string{"key": args[0]})
			}
			cl, err := c.client(sio.in, true)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out, _, err := cl.do(ctx, method, path, body)
			if err != nil {
				return err
			}
			var v server.KeyringView
			if err := json.Unmarshal(out, &v); err != nil {
				return fmt.Errorf("unreadable answer: %w", err)
			}
			if c.json {
				sio.out.Write(out)
			} else {
				printKeyring(sio.out, v)
			}
			if v.Failed > 0 {
				return fmt.Errorf("%s failed on %d of %d members (it is safe to repeat)", op, v.Failed, len(v.Results))
			}
			return nil
		}
	}
}

// printKeyring prints each key with how many members hold it and use it
// as their primary (as 'consul keyring -list' does), then the members
// that failed.
func printKeyring(w io.Writer, v server.KeyringView) {
	answered := 0
	installed, primary := map[string]int{}, map[string]int{}
	var keys []string
	for _, r := range v.Results {
		if r.Error != "" && len(r.Keyring.Keys) == 0 {
			continue
		}
		answered++
		for _, k := range r.Keyring.Keys {
			if installed[k] == 0 {
				keys = append(keys, k)
			}
			installed[k]++
		}
		if r.Keyring.Primary != "" {
			primary[r.Keyring.Primary]++
		}
	}
	slices.SortFunc(keys, func(a, b string) int { return primary[b] - primary[a] })
	if v.Op != cluster.KeyringList {
		fmt.Fprintf(w, "%s: done on %d of %d members\n", v.Op, len(v.Results)-v.Failed, len(v.Results))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tINSTALLED\tPRIMARY")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d/%d\t%d/%d\n", k, installed[k], answered, primary[k], answered)
	}
	tw.Flush()
	for _, r := range v.Results {
		if r.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", r.Node, r.Error)
		}
	}
}
