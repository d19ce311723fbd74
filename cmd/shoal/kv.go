package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/httpc"
	"github.com/shoal-dev/shoal/internal/server"
)

const kvUsage = `usage: shoal kv <get|put|cas|del|list> [flags] args

  shoal kv get KEY [--stale]        print a key's value and version
  shoal kv put KEY VALUE            set a key; prints the new version
  shoal kv cas KEY VERSION VALUE    set a key only if it is at VERSION (0: absent)
  shoal kv del KEY [--version V]    delete a key (only at version V, if given)
  shoal kv list [PREFIX] [--stale]  list keys

flags (before the arguments): --addr HOST:PORT (a node's HTTP address;
default: the first node in <data-dir>/cluster.json), --data-dir, --json.
Reads are linearizable (through the raft leader) unless --stale.
`

func runKV(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" {
		fmt.Fprint(stdout, kvUsage)
		return nil
	}
	op := args[0]
	fs := flag.NewFlagSet("kv "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "HTTP address of a node")
	dataDir := fs.String("data-dir", "shoal-data", "cluster directory written by 'shoal up'")
	stale := fs.Bool("stale", false, "read the node's local replica instead of asking the leader")
	version := fs.String("version", "", "delete only at this version")
	asJSON := fs.Bool("json", false, "print the JSON answer")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	pos := fs.Args()
	want := map[string][2]int{"get": {1, 1}, "put": {2, 2}, "cas": {3, 3}, "del": {1, 1}, "list": {0, 1}}[op]
	if want == [2]int{} && op != "list" {
		return usagef("kv: unknown operation %q\n%s", op, kvUsage)
	}
	if len(pos) < want[0] || len(pos) > want[1] {
		return usagef("kv %s: wrong number of arguments\n%s", op, kvUsage)
	}
	q := url.Values{}
	if *stale {
		q.Set("stale", "true")
	}
	var method, path string
	var body []byte
	switch op {
	case "get":
		method, path = http.MethodGet, "/v1/kv/"+escapeKey(pos[0])
	case "put":
		method, path, body = http.MethodPut, "/v1/kv/"+escapeKey(pos[0]), []byte(pos[1])
	case "cas":
		if _, err := strconv.ParseUint(pos[1], 10, 64); err != nil {
			return usagef("kv cas: version %q is not a number", pos[1])
		}
		q.Set("cas", pos[1])
		method, path, body = http.MethodPut, "/v1/kv/"+escapeKey(pos[0]), []byte(pos[2])
	case "del":
		if *version != "" {
			q.Set("version", *version)
		}
		method, path = http.MethodDelete, "/v1/kv/"+escapeKey(pos[0])
	case "list":
		if len(pos) == 1 {
			q.Set("prefix", pos[0])
		}
		method, path = http.MethodGet, "/v1/kv"
	}
	node, err := kvAddr(*addr, *dataDir)
	if err != nil {
		return err
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := httpc.Do(ctx, method, node, path, body)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(out)
		return err
	}
	return printKV(stdout, op, out)
}

func escapeKey(k string) string {
	parts := strings.Split(k, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// kvAddr is the node to ask: --addr, else the first node of cluster.json.
func kvAddr(addr, dataDir string) (string, error) {
	if addr != "" {
		return addr, nil
	}
	var cf clusterFile
	path := filepath.Join(dataDir, "cluster.json")
	if err := readJSONFile(path, &cf); err != nil || len(cf.Nodes) == 0 {
		return "", fmt.Errorf("no --addr given and %s is unreadable (is 'shoal up' running?): %v", path, err)
	}
	return cf.Nodes[0].HTTP, nil
}

func printKV(w io.Writer, op string, out []byte) error {
	switch op {
	case "get":
		var kv server.KVView
		if err := json.Unmarshal(out, &kv); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\t(version %d)\n", kvValue(kv), kv.Version)
	case "put", "cas":
		var kv server.KVView
		if err := json.Unmarshal(out, &kv); err != nil {
			return err
		}
		fmt.Fprintf(w, "version %d\n", kv.Version)
	case "del":
		fmt.Fprintln(w, "deleted")
	case "list":
		var list []server.KVView
		if err := json.Unmarshal(out, &list); err != nil {
			return err
		}
		for _, kv := range list {
			fmt.Fprintf(w, "%s\t%s\t(version %d)\n", kv.Key, kvValue(kv), kv.Version)
		}
	}
	return nil
}

func kvValue(kv server.KVView) string {
	if kv.ValueBase64 != nil {
		return "base64:" + string(mustJSON(kv.ValueBase64))
	}
	return kv.Value
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return bytes.Trim(b, `"`)
}
