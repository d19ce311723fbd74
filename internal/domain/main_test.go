package domain_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/pgserver"
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

// pgServer is a PostgreSQL server for the test (pgserver), and the
// databases the test made on it.
type pgServer struct {
	*pgserver.Server
	dbs int
}

// startPostgres starts a server for the test, or skips the test when
// PostgreSQL is not installed. It is stopped when the test ends.
func startPostgres(t *testing.T) *pgServer {
	for _, tool := range []string{"initdb", "postgres"} {
		if _, err := pgserver.Bin(tool); err != nil {
			t.Skipf("no PostgreSQL here: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, nil, "")
	if err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	t.Cleanup(srv.Stop)
	return &pgServer{Server: srv}
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
	admin, err := domain.Open(ctx, domain.Config{URL: p.URL("postgres"), Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.DB().ExecContext(ctx, "CREATE DATABASE "+name)
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	return p.URL(name)
}
