package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-dev/shoal/internal/cli"
)

// Every command's settings survive a round trip through a configuration
// file: what --print-config writes, --config reads back, for every flag
// of every command.
func TestConfigFileRoundTripEveryCommand(t *testing.T) {
	for _, c := range commands {
		s, _ := c.newSet()
		var buf bytes.Buffer
		s.PrintConfig(&buf)
		file := filepath.Join(t.TempDir(), "shoal.yaml")
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		again, _ := c.newSet()
		if _, err := again.Parse([]string{"--config", file}, cli.Options{Env: noEnv, Known: knownFlag}); err != nil {
			t.Errorf("%s: --config of its own printed configuration: %v\n%s", c.name, err, buf.String())
			continue
		}
		for _, f := range again.Flags() {
			if f.Name == cli.ConfigFlag || f.CommandLineOnly() {
				continue
			}
			if want := s.Lookup(f.Name).Value(); f.Source != cli.FromFile || f.Value() != want {
				t.Errorf("%s --%s: %q from %s after the round trip, want %q from the file", c.name, f.Name, f.Value(), f.Source, want)
			}
		}
	}
}

func noEnv(string) (string, bool) { return "", false }

// The command line wins over the environment, which wins over the file;
// a key of another command is ignored, a misspelt one refused with its
// line.
func TestConfigFilePrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shoal.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("name: from-file\ncache-mode: distributed\nvoters: 5\njoin: [127.0.0.1:1, 127.0.0.1:2]\naddr: 127.0.0.1:9 # a kv setting: ignored\n")
	t.Setenv("SHOAL_VOTERS", "7")
	n, s := parseNode(t, "--config", file, "--cache-mode", "local")
	if n.Cluster.Name != "from-file" || n.Cluster.CacheMode != "local" || n.Store.MaxVoters != 7 || len(n.join) != 2 {
		t.Fatalf("name %q, cache mode %q, voters %d, join %v", n.Cluster.Name, n.Cluster.CacheMode, n.Store.MaxVoters, n.join)
	}
	for name, src := range map[string]string{"name": cli.FromFile, "cache-mode": cli.FromFlag, "voters": cli.FromEnv, "bind": cli.FromDefault} {
		if got := s.Lookup(name).Source; got != src {
			t.Errorf("--%s came from %s, want %s", name, got, src)
		}
	}
	t.Setenv("SHOAL_VOTERS", "") // empty: unset
	for _, tc := range []struct{ file, want string }{
		{"name: a\ncahce-mode: local\n", `shoal.yaml:2: unknown setting "cahce-mode"`},
		{"voters: many\n", `shoal.yaml:1: voters: "many" is not a whole number`},
		{"print-config: true\n", `"print-config" can only be given on the command line`},
		{"- a\n- b\n", "want a mapping"},
		{"name: [a, b]\n", "name: want a single value"},
	} {
		write(tc.file)
		var out, errb bytes.Buffer
		if code := run([]string{"node", "--config", file}, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("file %q: exit %d, %q; want 2 and %q", tc.file, code, errb.String(), tc.want)
		}
	}
}

// A refused setting names its flag, wherever it came from, in the words
// of the package that refused it.
func TestPrintConfigShowsSources(t *testing.T) {
	t.Setenv("SHOAL_CACHE_MODE", "distributed")
	var out, errb bytes.Buffer
	if code := run([]string{"node", "--name", "a", "--bind", "127.0.0.1:9000", "--print-config"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		`name: "a"`, "# flag --name", `cache-mode: "distributed"`, "# env $SHOAL_CACHE_MODE",
		`rpc: "127.0.0.1:9001"`, `preset: "loopback"`, "# derived", `voters: 3`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--print-config lacks %q:\n%s", want, out.String())
		}
	}
}

// Every command that talks to a node finds it in $SHOAL_ADDR and sends
// $SHOAL_TOKEN (or $SHOAL_USER and $SHOAL_PASSWORD), and takes the same
// from --config.
func TestClientSettingsFromEnvAndFile(t *testing.T) {
	var mu sync.Mutex
	var got []string // "METHOD PATH AUTH"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/cluster"):
			json.NewEncoder(w).Encode(map[string]any{"self": "n1", "members": []any{}})
		case r.URL.Path == "/v1/kv" || r.URL.Path == "/v1/jobs" || r.URL.Path == "/v1/raft/peers":
			w.Write([]byte("[]"))
		default:
			w.Write([]byte("{}"))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	snap := filepath.Join(t.TempDir(), "s.snap")
	calls := [][]string{
		{"kv", "get", "k"}, {"kv", "put", "k", "v"}, {"kv", "cas", "k", "1", "v"}, {"kv", "del", "k"}, {"kv", "list"},
		{"jobs", "list"}, {"jobs", "show", "j"}, {"jobs", "run-now", "j"}, {"jobs", "pause", "j"}, {"jobs", "resume", "j"}, {"jobs", "delete", "j"},
		{"raft", "peers"}, {"raft", "remove-peer", "n3"}, {"status"}, {"snapshot", "save", snap},
	}
	check := func(how string, auth string, args []string) {
		t.Helper()
		mu.Lock()
		got = nil
		mu.Unlock()
		var out, errb bytes.Buffer
		run(args, &out, &errb)
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 || !strings.HasSuffix(got[0], " "+auth) {
			t.Errorf("%s: shoal %v sent %q, want a request with %q (stderr %s)", how, args, got, auth, errb.String())
		}
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv("SHOAL_ADDR", addr)
		t.Setenv("SHOAL_TOKEN", "tok-from-env")
		for _, args := range calls {
			check("env", "Bearer tok-from-env", args)
		}
	})
	t.Run("env user", func(t *testing.T) {
		t.Setenv("SHOAL_ADDR", addr)
		t.Setenv("SHOAL_USER", "admin")
		t.Setenv("SHOAL_PASSWORD", "pw")
		for _, args := range calls {
			check("env user", "Basic YWRtaW46cHc=", args)
		}
	})
	t.Run("file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "shoal.yaml")
		if err := os.WriteFile(file, []byte("addr: "+addr+"\ntoken: tok-from-file\ncache-mode: local # a node's: ignored\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range calls {
			check("--config", "Bearer tok-from-file", append(args, "--config", file))
		}
		t.Setenv("SHOAL_CONFIG", file)
		check("$SHOAL_CONFIG", "Bearer tok-from-file", []string{"kv", "get", "k"})
	})
}

// Help is asked for, not a mistake: every command and group answers -h
// with its usage on stdout and status 0; a wrong flag is one line of
// error and one of how to get help.
func TestHelpAndMistakes(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"user", "-h"}, {"token", "-h"}, {"bench", "-h"}, {"kv", "help"},
		{"node", "-h"}, {"kv", "get", "-h"}, {"bench", "coupling", "--help"}, {"--version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || out.Len() == 0 {
			t.Errorf("shoal %v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	code := run([]string{"node", "--no-such-flag"}, &out, &errb)
	if lines := strings.Split(strings.TrimSpace(errb.String()), "\n"); code != 2 || len(lines) != 2 || !strings.Contains(lines[1], "shoal node -h") {
		t.Errorf("a wrong flag: exit %d, %q", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"user", "grant", "alice", "BILL", "MAYBE"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "READ, WRITE, ADMIN or NONE") {
		t.Errorf("user grant with a wrong permission: exit %d, %q", code, errb.String())
	}
}
