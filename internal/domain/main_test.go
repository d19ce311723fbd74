package domain_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/testkit"
)

func TestMain(m *testing.M) { testkit.MainNoLeaks(m, 10*time.Second) }

// scenario is a test that runs on each dialect with a fresh store.
type scenario struct {
	name string
	fn   func(t *testing.T, s *domain.Store)
}

// scenarios is filled by the test files' init functions.
var scenarios []scenario

func register(name string, fn func(t *testing.T, s *domain.Store)) {
	scenarios = append(scenarios, scenario{name, fn})
}

func TestSQLite(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			s, _ := domaintest.Open(t, domaintest.Path(t), domaintest.Config(t))
			sc.fn(t, s)
		})
	}
}

// TestPostgres runs the same scenarios on a PostgreSQL server started for
// the test (skipped when initdb and pg_ctl are not installed).
func TestPostgres(t *testing.T) {
	srv := startPostgres(t)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { sc.fn(t, srv.open(t)) })
	}
	t.Run("concurrent-migrations", func(t *testing.T) { concurrentOpens(t, srv.createDB(t)) })
	t.Run("seed-10k", func(t *testing.T) { seedTenThousand(t, srv.open(t)) })
	t.Run("outage", func(t *testing.T) { postgresOutage(t, srv) })
}

// pgServer is a PostgreSQL server in a temporary directory.
type pgServer struct {
	dir    string
	port   int
	dbs    int
	asUser []string // runuser prefix when the tests run as root
}

// startPostgres starts a server for the test, or skips the test when
// PostgreSQL is not installed. It is stopped when the test ends.
func startPostgres(t *testing.T) *pgServer {
	for _, tool := range []string{"initdb", "pg_ctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no PostgreSQL here: %v", err)
		}
	}
	p := &pgServer{}
	t.Cleanup(p.stop)
	if err := p.init(); err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	return p
}

// open creates a fresh database and opens a Store on it.
func (p *pgServer) open(t *testing.T) *domain.Store {
	t.Helper()
	cfg := domaintest.Config(t)
	cfg.URL = p.createDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := domain.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// createDB creates a fresh database and returns its URL.
func (p *pgServer) createDB(t *testing.T) string {
	t.Helper()
	p.dbs++
	name := fmt.Sprintf("shoal_test_%d", p.dbs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := domain.Open(ctx, domain.Config{URL: p.url("postgres"), Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.DB().ExecContext(ctx, "CREATE DATABASE "+name)
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	return p.url(name)
}

func (p *pgServer) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

// init runs initdb and pg_ctl start in a temporary directory (as the
// postgres user when the tests run as root, which PostgreSQL refuses).
func (p *pgServer) init() error {
	dir, err := os.MkdirTemp("", "shoal-pg-")
	if err != nil {
		return err
	}
	p.dir = dir
	if os.Geteuid() == 0 {
		if err := p.dropRoot(); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	p.port = port
	data := filepath.Join(dir, "data")
	if out, err := p.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"); err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out)
	}
	return p.startServer()
}

func (p *pgServer) startServer() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", p.port, p.dir)
	out, err := p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-o", opts, "-l", filepath.Join(p.dir, "log"), "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	return nil
}

func (p *pgServer) stopServer(mode string) error {
	out, err := p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", mode, "-w", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

func (p *pgServer) dropRoot() error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running as root and no postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(p.dir, uid, gid); err != nil {
		return err
	}
	p.asUser = []string{"runuser", "-u", "postgres", "--"}
	return nil
}

func (p *pgServer) run(name string, args ...string) ([]byte, error) {
	cmd := append(append([]string{}, p.asUser...), append([]string{name}, args...)...)
	return exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
}

func (p *pgServer) stop() {
	if p.dir == "" {
		return
	}
	p.stopServer("immediate")
	os.RemoveAll(p.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
