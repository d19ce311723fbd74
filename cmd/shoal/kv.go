package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster/cp/cphttp"
	"github.com/shoal-dev/shoal/internal/cli"
)

// kvSettings are those of the 'shoal kv' operations.
type kvSettings struct {
	*clientSettings
	stale   bool
	version string
}

const kvNote = "Reads are linearizable (through the raft leader) unless --stale."

func init() {
	for _, op := range []struct {
		name, args, summary string
		min, max            int
	}{
		{"get", "KEY", "Print a key's value and version. " + kvNote, 1, 1},
		{"put", "KEY VALUE", "Set a key; print the new version.", 2, 2},
		{"cas", "KEY VERSION VALUE", "Set a key only if it is at VERSION (0: absent); print the new version.", 3, 3},
		{"del", "KEY", "Delete a key (only at --version, if given).", 1, 1},
		{"list", "[PREFIX]", "List the keys (under PREFIX). " + kvNote, 0, 1},
	} {
		register(&command{name: "kv " + op.name, args: op.args, min: op.min, max: op.max, summary: op.summary,
			bind: func(s *cli.Set) runFunc {
				k := &kvSettings{clientSettings: bindClient(s)}
				if op.name == "get" || op.name == "list" {
					s.Bool(&k.stale, "stale", "read the node's local replica instead of asking the leader")
				}
				if op.name == "del" {
					s.String(&k.version, "version", "delete only at this version")
				}
				return func(ctx context.Context, sio stdio, args []string) error { return k.run(ctx, sio, op.name, args) }
			}})
	}
}

// request is the HTTP request of an operation.
func (k *kvSettings) request(op string, pos []string) (method, path string, body []byte, err error) {
	q := url.Values{}
	if k.stale {
		q.Set("stale", "true")
	}
	switch op {
	case "get":
		method, path = http.MethodGet, "/v1/kv/"+escapeKey(pos[0])
	case "put":
		method, path, body = http.MethodPut, "/v1/kv/"+escapeKey(pos[0]), []byte(pos[1])
	case "cas":
		if _, err := strconv.ParseUint(pos[1], 10, 64); err != nil {
			return "", "", nil, usagef("version %q is not a number", pos[1])
		}
		q.Set("cas", pos[1])
		method, path, body = http.MethodPut, "/v1/kv/"+escapeKey(pos[0]), []byte(pos[2])
	case "del":
		if k.version != "" {
			q.Set("version", k.version)
		}
		method, path = http.MethodDelete, "/v1/kv/"+escapeKey(pos[0])
	case "list":
		if len(pos) == 1 {
			q.Set("prefix", pos[0])
		}
		method, path = http.MethodGet, "/v1/kv"
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return method, path, body, nil
}

func (k *kvSettings) run(ctx context.Context, sio stdio, op string, pos []string) error {
	method, path, body, err := k.request(op, pos)
	if err != nil {
		return err
	}
	c, err := k.client(sio.in, false)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, _, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	if k.json {
		_, err := sio.out.Write(out)
		return err
	}
	return printKV(sio.out, op, out)
}

func escapeKey(k string) string {
	parts := strings.Split(k, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func printKV(w io.Writer, op string, out []byte) error {
	switch op {
	case "get":
		var kv cphttp.KVView
		if err := json.Unmarshal(out, &kv); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\t(version %d)\n", kvValue(kv), kv.Version)
	case "put", "cas":
		var kv cphttp.KVView
		if err := json.Unmarshal(out, &kv); err != nil {
			return err
		}
		fmt.Fprintf(w, "version %d\n", kv.Version)
	case "del":
		fmt.Fprintln(w, "deleted")
	case "list":
		var list []cphttp.KVView
		if err := json.Unmarshal(out, &list); err != nil {
			return err
		}
		for _, kv := range list {
			fmt.Fprintf(w, "%s\t%s\t(version %d)\n", kv.Key, kvValue(kv), kv.Version)
		}
	}
	return nil
}

func kvValue(kv cphttp.KVView) string {
	if kv.ValueBase64 != nil {
		return "base64:" + string(mustJSON(kv.ValueBase64))
	}
	return kv.Value
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return bytes.Trim(b, `"`)
}
