package main

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// slowConn is a raw client connection that sent its request's headers
// and trickles its body one byte at a time.
type slowConn struct {
	c    net.Conn
	stop chan struct{}
	done chan struct{}
}

// dialSlow sends head (the request line and headers, ending in a blank
// line) to addr and then one byte of body every interval until the
// connection fails or Close is called.
func dialSlow(t *testing.T, addr, head string, interval time.Duration) *slowConn {
	t.Helper()
	return dialSlowFrom(t, "", addr, head, interval)
}

// dialSlowFrom is dialSlow from the local address ip ("" for any).
func dialSlowFrom(t *testing.T, ip, addr, head string, interval time.Duration) *slowConn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	s := &slowConn{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if interval <= 0 {
			return
		}
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tk.C:
				if _, err := c.Write([]byte("0")); err != nil {
					return
				}
			}
		}
	}()
	return s
}

// answer reads the response to the slow request and then waits for the
// server to close the connection; it returns the status, or an error if
// there was no answer or the connection stayed open, within d.
func (s *slowConn) answer(d time.Duration) (int, error) {
	s.c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufio.NewReader(s.c), nil)
	if err != nil {
		return 0, fmt.Errorf("no answer: %w", err)
	}
	// Body and then EOF, or a reset (the server closed while the client's
	// trickle was still arriving): the server closed the connection. Only
	// the read deadline means it stayed open.
	_, err = io.Copy(io.Discard, s.c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return resp.StatusCode, fmt.Errorf("answered %d but the connection stayed open: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

func (s *slowConn) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.c.Close()
	<-s.done
}

// Slow clients cost connections, never pool slots, on one real node: 200
// trickling bodies (190 kv PUTs and 10 anonymous upload-pack POSTs into a
// public repository, one byte a second) and 200 kv PUTs announcing a
// gigabyte and sending nothing, from four client addresses (100 each,
// under the per-address bound); meanwhile anonymous REST reads and the
// repository's info/refs keep answering 200 with p99 under 1 s, and the
// web and upload pools have no request in flight or queued on the slow
// clients' account. The gigabyte ones are refused with 413 at once and
// closed; the trickling ones end with 408 after the grace period and are
// closed, no pool having refused or timed out a request.
func TestHTTPSlowClientsHoldNoSlot(t *testing.T) {
	const grace = 12 * time.Second
	g := startGitCluster(t, 1, 240, "--http-body-grace", grace.String(), "--pool-web", "8", "--pool-upload", "2")
	g.createRepo("pub", true)
	addr := g.c.Nodes()[0].HTTP
	auth := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+adminPW)) + "\r\n"

	start := time.Now()
	var slow, huge []*slowConn
	t.Cleanup(func() {
		for _, s := range append(slow, huge...) {
			s.Close()
		}
	})
	from := func(i int) string { return fmt.Sprintf("127.0.1.%d", 1+i%4) }
	for i := range 190 {
		slow = append(slow, dialSlowFrom(t, from(i), addr, fmt.Sprintf("PUT /v1/kv/slow/%d HTTP/1.1\r\nHost: x\r\n%sContent-Length: 100\r\n\r\n", i, auth), time.Second))
	}
	for i := range 10 {
		slow = append(slow, dialSlowFrom(t, from(i), addr, fmt.Sprintf("POST /scm/%s/pub.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n"+
			"Content-Type: application/x-git-upload-pack-request\r\nContent-Length: %d\r\n\r\n", gitProject, 200+i), time.Second))
	}
	for i := range 200 {
		huge = append(huge, dialSlowFrom(t, from(i), addr, fmt.Sprintf("PUT /v1/kv/huge/%d HTTP/1.1\r\nHost: x\r\n%sContent-Length: 1000000000\r\n\r\n", i, auth), 0))
	}

	// The gigabyte announcements: 413 and closed, long before the grace.
	for i, s := range huge {
		code, err := s.answer(grace / 2)
		if err != nil || code != http.StatusRequestEntityTooLarge {
			t.Fatalf("huge Content-Length %d: %d, %v; want 413 and the connection closed", i, code, err)
		}
	}

	// While the trickling bodies are in flight: REST and info/refs answer.
	var lat []time.Duration
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; time.Since(start) < grace-2*time.Second || i < 10; i++ {
		for _, path := range []string{"/rest/api/1.0/projects/" + gitProject + "/repos/pub",
			"/scm/" + gitProject + "/pub.git/info/refs?service=git-upload-pack"} {
			t0 := time.Now()
			resp, err := client.Get(g.node(1) + path)
			if err != nil {
				t.Fatalf("GET %s during the slow clients: %v", path, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(t0))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s during the slow clients: %d", path, resp.StatusCode)
			}
		}
		if i >= 200 {
			break
		}
	}
	if time.Since(start) > grace {
		t.Logf("the probes outlasted the grace period (%v): the machine is slow", time.Since(start))
	}
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	t.Logf("%d REST and info/refs requests beside 200 trickling bodies: median %v, p99 %v, max %v",
		len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
	if p99 > time.Second {
		t.Errorf("p99 %v beside the slow clients, want under 1 s", p99)
	}
	// The trickling bodies hold connections, not slots: nothing in flight
	// or queued in the web and upload pools (the probes are over; /metrics
	// itself is served outside them).
	m := g.metrics(1)
	for _, pool := range []string{"web", "git-upload"} {
		if n := m[`shoal_pool_in_flight{pool="`+pool+`"}`] + m[`shoal_pool_queued{pool="`+pool+`"}`]; n != 0 {
			t.Errorf("the %s pool has %v requests in flight or queued beside the trickling bodies", pool, n)
		}
	}

	// The trickling bodies: 408 after the grace period, and closed.
	var wg sync.WaitGroup
	errs := make(chan error, len(slow))
	for i, s := range slow {
		wg.Go(func() {
			code, err := s.answer(grace + 60*time.Second)
			if err == nil && code != http.StatusRequestTimeout {
				err = fmt.Errorf("status %d, want 408", code)
			}
			if err != nil {
				errs <- fmt.Errorf("slow client %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if d := time.Since(start); d < grace {
		t.Errorf("slow clients refused after %v, before the grace period %v", d, grace)
	}
	m = g.metrics(1)
	for _, pool := range []string{"web", "git-upload"} {
		if r := m[`shoal_pool_rejected_total{pool="`+pool+`"}`] + m[`shoal_pool_timed_out_total{pool="`+pool+`"}`]; r != 0 {
			t.Errorf("the %s pool refused %v requests", pool, r)
		}
	}
	b, err := os.ReadFile(g.c.Nodes()[0].Log)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if strings.Contains(l, "level=ERROR") {
			t.Errorf("ERROR logged: %s", l)
		}
	}
}
