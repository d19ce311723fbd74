package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/server"
)

// Bad flags, from the command line or the environment, are refused with a
// message saying which and why, and exit status 2.
func TestBadFlagsAreExplained(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"node", "--bind", "nonsense"}, nil, `--bind "nonsense": want host:port`},
		{[]string{"node", "--bind", "127.0.0.1:70000"}, nil, "port must be a number from 0 to 65535"},
		{[]string{"node", "--cache-mode", "far"}, nil, `--cache-mode "far": want local, distributed or near`},
		{[]string{"node", "--voters", "4"}, nil, "--voters 4: want 1, 3, 5 or 7"},
		{[]string{"node", "--cache-max-invalidations", "-3"}, nil, "--cache-max-invalidations -3: want a count of at least 0 (0: the default)"},
		{[]string{"node", "--preset", "wan"}, nil, `--preset "wan"`},
		{[]string{"node", "--log-level", "loud"}, nil, `--log-level "loud"`},
		{[]string{"node", "--join", "host-without-port"}, nil, `--join "host-without-port"`},
		{[]string{"node"}, map[string]string{"SHOAL_CACHE_MODE": "bogus"}, `--cache-mode "bogus"`},
		{[]string{"node"}, map[string]string{"SHOAL_JOIN_TIMEOUT": "soon"}, `$SHOAL_JOIN_TIMEOUT="soon"`},
		{[]string{"node", "--gossip-key", "c2hvcnQ="}, nil, "16, 24 or 32 bytes"},
		{[]string{"node"}, map[string]string{"SHOAL_GOSSIP_KEY": "%%%"}, "$SHOAL_GOSSIP_KEY"},
		{[]string{"node", "--bind", "0.0.0.0:7946", "--data-dir", "/nonexistent/k16"}, nil,
			"refusing to start: the gossip address 0.0.0.0:7946 is not loopback and gossip is not encrypted and the peer RPC and raft run without TLS; " +
				"give --gossip-key and --tls-ca, --tls-cert and --tls-key ('shoal tls'), or pass --insecure"},
		{[]string{"node", "--bind", "127.0.0.1:7946", "--rpc", "10.1.2.3:7947", "--data-dir", "/nonexistent/k16"}, nil,
			"refusing to start: the peer RPC address 10.1.2.3:7947 is not loopback and gossip is not encrypted and the peer RPC and raft run without TLS"},
		{[]string{"node", "--bind", "0.0.0.0:7946", "--gossip-key", "AAAAAAAAAAAAAAAAAAAAAA==", "--data-dir", "/nonexistent/k16"}, nil,
			"refusing to start: the gossip address 0.0.0.0:7946 is not loopback and the peer RPC and raft run without TLS; give --tls-ca, --tls-cert and --tls-key ('shoal tls'), or pass --insecure"},
		{[]string{"node", "--tls-ca", "/nonexistent/ca.pem"}, nil, "--tls-cert \"\": want a file: the CA, the certificate and the key go together"},
		{[]string{"up", "-n", "0"}, nil, "-n 0: want 1 to 64 nodes"},
		{[]string{"up", "--bind-ip", "10.1.2.3"}, nil, "give a loopback address"},
		{[]string{"node", "extra"}, nil, `unexpected argument "extra"`},
		{[]string{"kv", "cas", "k", "x", "v"}, nil, `version "x" is not a number`},
		{[]string{"frobnicate"}, nil, `unknown command "frobnicate"`},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("shoal %v (env %v): exit %d, stderr %q; want exit 2 and %q", tc.args, tc.env, code, errb.String(), tc.want)
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
}

func TestEnvFillsUnsetFlags(t *testing.T) {
	t.Setenv("SHOAL_NAME", "from-env")
	t.Setenv("SHOAL_JOIN", "127.0.0.1:1, 127.0.0.1:2")
	t.Setenv("SHOAL_CACHE_MODE", "distributed")
	n, s := parseNode(t, "--cache-mode", "local")
	if n.Cluster.Name != "from-env" || len(n.join) != 2 || n.join[1] != "127.0.0.1:2" {
		t.Fatalf("env not applied: %+v", n)
	}
	if n.Cluster.CacheMode != "local" {
		t.Fatalf("the command line must win over the environment, got %q", n.Cluster.CacheMode)
	}
	if f := s.Lookup("name"); f.Source != cli.FromEnv {
		t.Fatalf("--name's source is %q", f.Source)
	}
}

// parseNode parses 'shoal node' flags as the command does.
func parseNode(t *testing.T, args ...string) (*nodeSettings, *cli.Set) {
	t.Helper()
	s := cli.New("node", "", "")
	n := &nodeSettings{Config: server.DefaultNodeConfig(server.PresetAuto)}
	n.bind(s)
	if _, err := s.Parse(args, cli.Options{Known: knownFlag}); err != nil {
		t.Fatal(err)
	}
	return n, s
}
