package server

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// One client address keeps at most MaxConnsPerClient connections open:
// one more from it is closed unanswered (and logged), while another
// address is served; a connection closed gives its place back.
func TestConnectionsPerClientBounded(t *testing.T) {
	const max = 5
	logs := &testkit.SyncBuffer{}
	s := singleWith(t, func(c *Config) {
		c.HTTP.MaxConnsPerClient = max
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	addr := s.HTTPAddr()
	dial := func(ip string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// healthz sends GET /healthz on c, keeping it open, and says how it
	// was answered.
	healthz := func(c net.Conn, r *bufio.Reader) error {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	var held []net.Conn
	for range max {
		c := dial("127.0.0.3")
		if err := healthz(c, bufio.NewReader(c)); err != nil {
			t.Fatalf("connection %d of %d from one address: %v", len(held)+1, max, err)
		}
		held = append(held, c)
	}
	// One more from the same address: closed without an answer.
	extra := dial("127.0.0.3")
	if err := healthz(extra, bufio.NewReader(extra)); err == nil {
		t.Fatalf("connection %d from one address answered, want it closed (bound %d)", max+1, max)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection %d from one address left open unanswered: %v", max+1, err)
	}
	// Another address is served, and so are the held connections.
	other := dial("127.0.0.4")
	if err := healthz(other, bufio.NewReader(other)); err != nil {
		t.Fatalf("another address beside the bound one: %v", err)
	}
	if !strings.Contains(logs.String(), "too many from one client") || !strings.Contains(logs.String(), "127.0.0.3") {
		t.Errorf("the refusal was not logged: %q", logs.String())
	}
	// A connection closed frees its place (the server sees the close
	// when its read of the next request ends).
	held[0].Close()
	testkit.Eventually(t, 30*time.Second, "a place freed for the address", func() bool {
		c := dial("127.0.0.3")
		defer c.Close()
		return healthz(c, bufio.NewReader(c)) == nil
	})
}
