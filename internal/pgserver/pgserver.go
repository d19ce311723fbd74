// Package pgserver runs a throwaway PostgreSQL server, for the chaos
// checker's and the coupling benchmark's clusters that share one, and
// for the domain store's tests (which halt and resume it, an outage).
package pgserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/shoal-dev/shoal/internal/netns"
)

// Server is a PostgreSQL server for tests and benchmarks: a fresh
// cluster in a temporary directory, in a network namespace of its own (a
// host of a netns.Net) or on loopback. It runs in the foreground as this
// process's child, as the postgres user when this process is root
// (PostgreSQL refuses to run as root), without fsync; Net.Close and
// netns.CleanupLeftovers kill one in a namespace if Stop is never
// reached.
type Server struct {
	dir    string           // owned by the server's user; removed by stop
	addr   string           // host:port
	newCmd func() *exec.Cmd // the server process, to start (again)
	cmd    *exec.Cmd        // running; nil once halted
	done   chan struct{}    // closed when cmd has exited
	err    error            // cmd's exit
}

// Bin finds a PostgreSQL program: on $PATH, else in Debian's
// /usr/lib/postgresql/VERSION/bin (the newest).
func Bin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	slices.SortFunc(found, func(a, b string) int { return pgVersion(b) - pgVersion(a) })
	if len(found) == 0 {
		return "", fmt.Errorf("PostgreSQL's %s not found (Debian: apt-get install postgresql)", name)
	}
	return found[0], nil
}

func pgVersion(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

// Start initializes a fresh cluster in a temporary directory and starts
// the server in host (nil: on 127.0.0.1), trusting connections from
// subnet (host's Net) and loopback, with an empty database "shoal".
func Start(ctx context.Context, host *netns.Host, subnet string) (_ *Server, err error) {
	initdb, err := Bin("initdb")
	if err != nil {
		return nil, err
	}
	postgres, err := Bin("postgres")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "shoal-pg-")
	if err != nil {
		return nil, err
	}
	p := &Server{dir: dir}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	var cred *syscall.Credential
	var asUser []string // setpriv's arguments, for the server inside a namespace
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root and no postgres user to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		asUser = []string{"setpriv", "--reuid", u.Uid, "--regid", u.Gid, "--clear-groups", "--"}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	listen, port := "127.0.0.1", 5432
	if host != nil {
		listen = host.Addr.String()
		hba, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		_, err = fmt.Fprintf(hba, "host all all %s trust\n", subnet)
		if err := errors.Join(err, hba.Close()); err != nil {
			return nil, err
		}
	} else if port, err = freeLoopbackPort(); err != nil {
		return nil, err
	}
	p.addr = net.JoinHostPort(listen, strconv.Itoa(port))
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-k", dir, "-c", "listen_addresses=" + listen,
		"-c", "fsync=off", "-c", "max_connections=300"}
	p.newCmd = func() *exec.Cmd {
		if host != nil {
			argv := append(append(slices.Clone(asUser), postgres), args...)
			return host.Command(argv[0], argv[1:]...)
		}
		cmd := exec.Command(postgres, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return cmd
	}
	if err := p.launch(ctx); err != nil {
		return nil, err
	}
	admin, err := sql.Open("pgx", p.URL("postgres"))
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE shoal"); err != nil {
		return nil, fmt.Errorf("creating the database: %w", err)
	}
	return p, nil
}

// launch starts the server process and waits until it accepts
// connections (60 s at most), appending its output to postgres.log.
func (p *Server) launch(ctx context.Context) error {
	logPath := filepath.Join(p.dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := p.newCmd()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		p.err = cmd.Wait()
		close(done)
	}()
	admin, err := sql.Open("pgx", p.URL("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close()
	for deadline := time.Now().Add(60 * time.Second); ; {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = admin.PingContext(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("postgres exited (%v) before it accepted connections: %s", p.err, tailFile(logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections at %s within 60 s: %v: %s", p.addr, err, tailFile(logPath))
		}
	}
}

// Addr is the server's host:port.
func (p *Server) Addr() string { return p.addr }

// PID is the server's (the postmaster's) process ID, 0 while halted.
func (p *Server) PID() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// URL is database db's URL, as the postgres superuser.
func (p *Server) URL(db string) string {
	return "postgres://postgres@" + p.addr + "/" + db + "?sslmode=disable"
}

// Halt shuts the server down (fast shutdown, SIGKILL after 15 s) and
// keeps its data: Resume starts it again, at the same address (an
// outage, for tests). Safe twice.
func (p *Server) Halt() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// Resume starts a halted server again and waits until it accepts
// connections.
func (p *Server) Resume(ctx context.Context) error {
	if p.cmd != nil {
		return errors.New("pgserver: the server is running")
	}
	return p.launch(ctx)
}

// Stop halts the server and removes its directory. Safe twice.
func (p *Server) Stop() {
	p.Halt()
	if p.dir != "" {
		os.RemoveAll(p.dir)
		p.dir = ""
	}
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailFile is a file's last lines, for an error.
func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-8):], "\n")
}
