package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-dev/shoal/internal/localcluster"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// A go-redis ClusterClient writes keys through three node processes with
// one backup per partition; one node is SIGKILLed mid-load. The client
// follows the slot map to the new owners, and every write acknowledged
// before, during or after the kill is still there: for each key, written
// by one goroutine with increasing values, the final value is at least
// the last acknowledged one (and at most the last attempted one).
func TestRESPOwnerKilledUnderClusterClient(t *testing.T) {
	redis.SetLogger(quietLogger{})
	c := startCluster(t, localcluster.Options{N: 3, Preset: "loopback", BootstrapExpect: 3, RESP: true,
		Args: []string{"--resp-anonymous", "--backups", "1"}})
	var addrs []string
	for _, p := range c.Nodes() {
		addrs = append(addrs, p.RESP)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, a := range addrs {
		rdb := redis.NewClient(&redis.Options{Addr: a})
		testkit.Eventually(t, 60*time.Second, "CLUSTER INFO ok at "+a, func() bool {
			s, err := rdb.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(s, "cluster_state:ok") && strings.Contains(s, "cluster_size:3")
		})
		rdb.Close()
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, MaxRedirects: 8,
		DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second})
	defer rdb.Close()
	testkit.Eventually(t, 60*time.Second, "a write through the cluster client", func() bool {
		return rdb.Set(ctx, "warm", "1", 0).Err() == nil
	})

	const writers, keysPer = 8, 16
	type keyState struct{ acked, attempted int }
	states := make([][]keyState, writers)
	var stop atomic.Bool
	var ok, failed atomic.Int64
	var lastOK atomic.Int64 // unix ms of the last acknowledged write
	var wg sync.WaitGroup
	for w := range writers {
		states[w] = make([]keyState, keysPer)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				k := i % keysPer
				st := &states[w][k]
				v := st.attempted + 1
				st.attempted = v
				err := rdb.Set(ctx, fmt.Sprintf("w%d:k%d", w, k), v, 0).Err()
				if err != nil {
					failed.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				st.acked = v
				ok.Add(1)
				lastOK.Store(time.Now().UnixMilli())
			}
		}()
	}
	waitOK := func(n int64, what string) {
		testkit.Eventually(t, 90*time.Second, what, func() bool { return ok.Load() >= n })
	}
	waitOK(500, "writes before the kill")
	// A tracking client on node 1 reads keys node 3 owns.
	var watched []string
	for w := 0; len(watched) < 8; w++ {
		key := fmt.Sprintf("tracked%d", w)
		if m, err := rdb.MasterForKey(ctx, key); err == nil && m.Options().Addr == addrs[2] {
			watched = append(watched, key)
			if err := rdb.Set(ctx, key, "before", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	tc, err := net.DialTimeout("tcp", addrs[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tr := bufio.NewReader(tc)
	tcmd := func(args ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := tc.Write([]byte(b.String())); err != nil {
			t.Fatal(err)
		}
		r, err := readRESP(tr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tcmd("HELLO", "3")
	if r := tcmd("CLIENT", "TRACKING", "ON"); r != "OK" {
		t.Fatalf("TRACKING ON: %s", r)
	}
	for _, k := range watched {
		if r := tcmd("GET", k); r != "before" {
			t.Fatalf("tracked GET %s: %s", k, r)
		}
	}
	if err := c.Kill(3); err != nil {
		t.Fatal(err)
	}
	killedAt := ok.Load()
	t.Logf("node3 SIGKILLed after %d acknowledged writes", killedAt)
	waitOK(killedAt+2000, "writes after the kill")
	stop.Store(true)
	wg.Wait()

	// The tracked keys' partitions changed owner: node 1 told the
	// tracking client to drop them (or closed its connection) — it cannot
	// keep "before" past a write acknowledged by the new owner.
	for _, k := range watched {
		if err := rdb.Set(ctx, k, "after", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	pending := map[string]bool{}
	for _, k := range watched {
		pending[k] = true
	}
	tc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for len(pending) > 0 {
		r, err := readRESP(tr)
		if err != nil {
			t.Logf("the tracking connection ended (%v): its client's cache goes with it", err)
			break
		}
		if r == "invalidate:*" {
			clear(pending)
		}
		for _, k := range strings.Split(strings.TrimPrefix(r, "invalidate:"), ",") {
			delete(pending, k)
		}
	}
	if len(pending) > 0 {
		t.Fatalf("no invalidation for %v", pending)
	}
	t.Logf("%d writes acknowledged, %d failed (the failover)", ok.Load(), failed.Load())

	lost := 0
	for w := range writers {
		for k := range keysPer {
			st := states[w][k]
			key := fmt.Sprintf("w%d:k%d", w, k)
			var got int
			testkit.Eventually(t, 30*time.Second, "reading "+key, func() bool {
				s, err := rdb.Get(ctx, key).Result()
				if errors.Is(err, redis.Nil) {
					got = 0
					return true
				}
				if err != nil {
					return false
				}
				got, err = strconv.Atoi(s)
				return err == nil
			})
			if got < st.acked || got > st.attempted {
				lost++
				t.Errorf("%s = %d; acknowledged %d, attempted up to %d", key, got, st.acked, st.attempted)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d keys lost an acknowledged write", lost)
	}
}

// quietLogger drops go-redis's log (the dial failures while a node is
// dead; the test counts failed writes itself). go-redis's logger is
// global and its goroutines may log after the test: it must not be the
// test's.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// readRESP reads one reply: a simple or bulk string as its text, an
// error as an error, an integer as its digits, an invalidation push as
// "invalidate:k1,k2" ("invalidate:*" for everything), anything else as
// its elements joined by spaces.
func readRESP(r *bufio.Reader) (string, error) {
	l, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	l = strings.TrimSuffix(l, "\r\n")
	if l == "" {
		return "", errors.New("empty reply line")
	}
	switch l[0] {
	case '+', ':':
		return l[1:], nil
	case '-':
		return "", errors.New(l[1:])
	case '_':
		return "", nil
	case '$':
		n, _ := strconv.Atoi(l[1:])
		if n < 0 {
			return "", nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	case '*', '>', '%', '~':
		n, _ := strconv.Atoi(l[1:])
		if l[0] == '%' {
			n *= 2
		}
		var items []string
		for range max(n, 0) {
			it, err := readRESP(r)
			if err != nil {
				return "", err
			}
			items = append(items, it)
		}
		if l[0] == '>' && len(items) == 2 && items[0] == "invalidate" {
			if items[1] == "" {
				return "invalidate:*", nil
			}
			return "invalidate:" + strings.ReplaceAll(items[1], " ", ","), nil
		}
		return strings.Join(items, " "), nil
	}
	return "", fmt.Errorf("unknown reply %q", l)
}
