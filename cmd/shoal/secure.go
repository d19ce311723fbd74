package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// checkSecured refuses a node whose gossip address reaches beyond
// loopback while it lacks a protection of the cluster's trust boundary,
// unless --insecure: anyone who can reach such a node's ports could join
// or impersonate a member. On loopback, plaintext stays available (tests,
// one machine). The refusal names every lack in one line.
func (n *nodeSettings) checkSecured() error {
	if n.insecure {
		return nil
	}
	// The first address that reaches beyond loopback: gossip's, the peer
	// RPC's or raft's (Validate has derived the last two).
	kind, addr := "", ""
	for _, a := range []struct{ kind, addr string }{
		{"gossip", n.Cluster.BindAddr}, {"peer RPC", n.Cluster.RPCAddr}, {"raft", n.RaftAddr},
	} {
		if a.addr != "" && !loopbackHost(a.addr) {
			kind, addr = a.kind, a.addr
			break
		}
	}
	if addr == "" {
		return nil
	}
	lacks, err := n.unsecured()
	if err != nil || len(lacks) == 0 {
		return err
	}
	var what, flags []string
	for _, l := range lacks {
		what, flags = append(what, l.what), append(flags, l.flags)
	}
	return usagef("refusing to start: the %s address %s is not loopback and %s; give %s, or pass --insecure to run without",
		kind, addr, strings.Join(what, " and "), strings.Join(flags, " and "))
}

// lack is a protection a node runs without, and the flags that give it.
type lack struct{ what, flags string }

// unsecured lists what the node lacks: gossip encryption (a --gossip-key,
// or a keyring saved in its data directory), and mutual TLS for the peer
// RPC and raft (--tls-ca, --tls-cert, --tls-key).
func (n *nodeSettings) unsecured() ([]lack, error) {
	var out []lack
	if len(n.Cluster.GossipKey) == 0 {
		_, err := os.Stat(n.Cluster.KeyringFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
			out = append(out, lack{"gossip is not encrypted", "--gossip-key"})
		case err != nil:
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
	}
	if !n.TLS.Enabled() {
		out = append(out, lack{"the peer RPC and raft run without TLS", "--tls-ca, --tls-cert and --tls-key ('shoal tls')"})
	}
	return out, nil
}

// loopbackHost reports whether addr's host is a loopback address (or
// "localhost"). A wildcard (0.0.0.0, ::) or another name reaches beyond.
func loopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
