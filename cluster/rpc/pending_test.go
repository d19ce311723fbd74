package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/internal/tlsutil"
)

// dialFrom opens a raw TCP connection to addr from the loopback address
// ip, and sends nothing on it.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectClosed waits for the node to close c (a read that ends in EOF or
// a reset, not in the read deadline).
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the node did not close the connection (%v)", what, err)
	}
}

// Connections that have not finished their handshake and hello are
// bounded, in all and per remote address, with TLS and without: silent
// connections (an attacker opening many and sending nothing) take the
// places, one more from the same address is closed at once and refused as
// busy_addr, one from another address past the total as busy, each logged
// with its address and counted; the silent ones are closed by the
// handshake deadline (DialTimeout), and a member is served once places are
// free again.
func TestPendingConnectionsBounded(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := "plaintext"
		if secure {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			p := newPKI(t, "a", "b")
			var reg registry
			refusals := &tlsutil.Refusals{}
			logs := &syncBuf{}
			deadline := 6 * time.Second
			cfg := Config{Name: "a", Network: &wire.TCP{}, ListenAddr: "127.0.0.1:0", Resolve: reg.resolve,
				Refusals: refusals, Logger: slog.New(slog.NewTextHandler(logs, nil)),
				DialTimeout: deadline, MaxPending: 6, MaxPendingPerAddr: 4}
			if secure {
				cfg.Network, cfg.Secure = p.network(t, "a"), true
			}
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			reg.set("a", a.Addr())
			a.Handle("echo", echo)

			start := time.Now()
			var silent []net.Conn
			for range 4 {
				silent = append(silent, dialFrom(t, "127.0.0.1", a.Addr()))
			}
			testkit.Eventually(t, 30*time.Second, "4 connections being admitted", func() bool { return a.Pending() == 4 })
			expectClosed(t, dialFrom(t, "127.0.0.1", a.Addr()), "a fifth connection from 127.0.0.1")
			silent = append(silent, dialFrom(t, "127.0.0.2", a.Addr()), dialFrom(t, "127.0.0.2", a.Addr()))
			testkit.Eventually(t, 30*time.Second, "6 connections being admitted", func() bool { return a.Pending() == 6 })
			expectClosed(t, dialFrom(t, "127.0.0.3", a.Addr()), "a seventh connection")
			for _, c := range []struct{ reason, remote string }{
				{tlsutil.ReasonBusyAddr, "remote=127.0.0.1:"}, {tlsutil.ReasonBusy, "remote=127.0.0.3:"},
			} {
				testkit.Eventually(t, 30*time.Second, "the refusal counted and logged as "+c.reason, func() bool {
					for _, l := range strings.Split(logs.String(), "\n") {
						if strings.Contains(l, "reason="+c.reason+" ") && strings.Contains(l, c.remote) && strings.Contains(l, "level=WARN") {
							return refusals.Get("rpc", c.reason) == 1
						}
					}
					return false
				})
			}
			if time.Since(start) < deadline-time.Second {
				// The silent connections still hold their places.
				if got := a.Pending(); got != 6 {
					t.Fatalf("%d connections being admitted, want 6", got)
				}
			}
			// The handshake deadline closes the silent connections.
			for i, c := range silent {
				expectClosed(t, c, "silent connection "+string(rune('1'+i)))
			}
			testkit.Eventually(t, 30*time.Second, "no connection being admitted", func() bool { return a.Pending() == 0 })
			var b *Node
			if secure {
				b = reg.startSecure(t, "b", p.network(t, "b"), []string{"a", "b"}, nil, nil)
			} else {
				b = reg.start(t, "b", &wire.TCP{})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if resp, err := b.Call(ctx, "a", "echo", []byte("hi")); err != nil || string(resp) != "b:hi" {
				t.Fatalf("b to a after the flood: %q, %v", resp, err)
			}
		})
	}
}
