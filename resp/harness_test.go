package resp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/server"
	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 15*time.Second) }

const adminPass = "resp-admin-pass"

// shoalCluster is n in-process nodes over real sockets (gossip, RPC,
// raft, HTTP, RESP on loopback), with an administrator "admin".
type shoalCluster struct {
	nodes []*server.Server
	addrs []string // RESP
	token string   // the administrator's token
}

func startShoal(t testing.TB, n int, tweak func(i int, c *server.Config)) *shoalCluster {
	t.Helper()
	dir := t.TempDir()
	sc := &shoalCluster{}
	// Each step has its own deadline: on a loaded machine the start alone
	// can take minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for i := range n {
		cfg := server.DefaultNodeConfig(server.PresetLoopback)
		cfg.Cluster.Name = fmt.Sprintf("node%d", i+1)
		cfg.Cluster.BindAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.DataDir = filepath.Join(dir, cfg.Cluster.Name)
		cfg.Store.BootstrapExpect = n
		cfg.Table.Backups = 1
		cfg.RESP.Addr = "127.0.0.1:0"
		cfg.PackCache = false
		// bcrypt at its default cost takes seconds per password check
		// under the race detector, tens of seconds on a loaded machine:
		// longer than AUTH's deadline (RESP.Timeout).
		cfg.DB.BcryptCost = bcrypt.MinCost
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if os.Getenv("SHOAL_RESP_TEST_LOG") != "" {
			cfg.Logger = testkit.Logger(t)
		}
		if tweak != nil {
			tweak(i, &cfg)
		}
		s, err := server.StartContext(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s.Shutdown(ctx)
		})
		if i > 0 {
			if _, err := s.Node().Join(ctx, []string{sc.nodes[0].Node().GossipAddr()}); err != nil {
				t.Fatal(err)
			}
		}
		sc.nodes = append(sc.nodes, s)
		sc.addrs = append(sc.addrs, s.RESPAddr())
	}
	// Every node has a table with every node in it, and every owner
	// answers.
	testkit.Eventually(t, 90*time.Second, "a partition table with every node, served", func() bool {
		epoch := sc.nodes[0].Maps().Table().Epoch
		for _, s := range sc.nodes {
			t := s.Maps().Table()
			seen := map[string]bool{}
			for _, r := range t.Replicas {
				if len(r) > 0 {
					seen[r[0]] = true
				}
			}
			if len(seen) != n || t.Epoch != epoch {
				return false
			}
		}
		return true
	})
	var u domain.User
	var lastErr error
	db := sc.nodes[0].DB()
	testkit.Eventually(t, 60*time.Second, "the administrator created", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		u, lastErr = db.CreateUser(ctx, domain.NewUser{Name: "admin", Email: "admin@example.com", Password: adminPass, Admin: true})
		if errors.Is(lastErr, domain.ErrConflict) {
			// An earlier attempt created it but failed to answer.
			u, lastErr = db.UserByName(ctx, "admin")
		}
		if lastErr != nil {
			t.Logf("creating the administrator: %v", lastErr)
		}
		return lastErr == nil
	})
	tctx, tcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer tcancel()
	tok, err := db.CreateToken(tctx, u.ID, "resp")
	if err != nil {
		t.Fatal(err)
	}
	sc.token = tok
	// Every owner acknowledges writes (an owner serves only a lease
	// after it adopted the table).
	for i := range n {
		c := dial(t, sc.addrs[i])
		c.auth(t)
		var keys []string
		for k := range 20 {
			keys = append(keys, sc.keyOwnedBy(i, fmt.Sprintf("warm%d-", k)))
		}
		testkit.Eventually(t, 60*time.Second, "writes at node "+strconv.Itoa(i+1), func() bool {
			ok := true
			for _, k := range keys {
				if r := c.do(t, "SET", k, "x"); r != "+OK" {
					ok = false
				}
			}
			return ok
		})
		for _, k := range keys {
			c.do(t, "DEL", k)
		}
		c.close()
	}
	return sc
}

// replyTimeout bounds each write to and reply from a raw connection: a
// hang fails the test, a loaded machine's slowness does not (commands
// forwarded to an owner are bounded by the server's 5 s RESP.Timeout).
const replyTimeout = 60 * time.Second

// client is a raw RESP connection whose replies read as canonical text:
// "+OK", "-ERR ...", ":1", "$\"bar\"", "nil", "*[...]", "%{k=v ...}".
type client struct {
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{nc: nc, r: bufio.NewReader(nc)}
	t.Cleanup(c.close)
	return c
}

func (c *client) close() { c.nc.Close() }

func (c *client) auth(t testing.TB) {
	t.Helper()
	if r := c.do(t, "AUTH", "admin", adminPass); r != "+OK" {
		t.Fatalf("AUTH: %s", r)
	}
}

func encode(args []string) []byte {
	b := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b = append(b, "$"+strconv.Itoa(len(a))+"\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// send writes commands as one pipeline.
func (c *client) send(t testing.TB, cmds ...[]string) {
	t.Helper()
	var b []byte
	for _, a := range cmds {
		b = append(b, encode(a)...)
	}
	c.nc.SetDeadline(time.Now().Add(replyTimeout))
	if _, err := c.nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (c *client) do(t testing.TB, args ...string) string {
	t.Helper()
	c.send(t, args)
	return c.read(t)
}

func (c *client) read(t testing.TB) string {
	t.Helper()
	c.nc.SetDeadline(time.Now().Add(replyTimeout))
	s, err := readReply(c.r)
	if err != nil {
		t.Fatalf("reading a reply: %v", err)
	}
	return s
}

func readLine(r *bufio.Reader) (string, error) {
	l, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

// readReply reads one reply (RESP2 or RESP3) as canonical text. A push
// is read as ">[...]".
func readReply(r *bufio.Reader) (string, error) {
	l, err := readLine(r)
	if err != nil {
		return "", err
	}
	if l == "" {
		return "", fmt.Errorf("empty line")
	}
	body := l[1:]
	switch l[0] {
	case '+', '-', ':', ',', '(':
		return l, nil
	case '#':
		return l, nil
	case '_':
		return "nil", nil
	case '$', '=':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "nil", nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		if l[0] == '=' {
			return "$" + strconv.Quote(string(b[4:n])), nil
		}
		return "$" + strconv.Quote(string(b[:n])), nil
	case '*', '~', '>', '%':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "nil", nil
		}
		if l[0] == '%' {
			n *= 2
		}
		items := make([]string, n)
		for i := range items {
			if items[i], err = readReply(r); err != nil {
				return "", err
			}
		}
		switch l[0] {
		case '~':
			slices.Sort(items)
			return "~[" + strings.Join(items, " ") + "]", nil
		case '%':
			var kv []string
			for i := 0; i+1 < len(items); i += 2 {
				kv = append(kv, items[i]+"="+items[i+1])
			}
			return "%{" + strings.Join(kv, " ") + "}", nil
		}
		return string(l[0]) + "[" + strings.Join(items, " ") + "]", nil
	}
	return "", fmt.Errorf("unknown reply type %q", l)
}

// redisServer starts a real redis-server on a free loopback port, or
// returns "" when none is installed. It is killed (by PID) at cleanup.
func redisServer(t testing.TB) string {
	t.Helper()
	return redisServerArgs(t)
}

// redisServerArgs is redisServer with more arguments for redis-server.
func redisServerArgs(t testing.TB, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return ""
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", t.TempDir(), "--loglevel", "warning"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testkit.Eventually(t, 20*time.Second, "redis-server answers", func() bool {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(2 * time.Second))
		nc.Write(encode([]string{"PING"}))
		l, err := bufio.NewReader(nc).ReadString('\n')
		return err == nil && l == "+PONG\r\n"
	})
	return addr
}
