package domain_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// Several nodes opening the same new SQLite file at once: the schema is
// applied exactly once and every Open succeeds.
func TestConcurrentMigrationsSQLite(t *testing.T) {
	concurrentOpens(t, domaintest.Path(t))
}

func concurrentOpens(t *testing.T, url string) {
	const nodes = 4
	var wg sync.WaitGroup
	stores := make([]*domain.Store, nodes)
	errs := make([]error, nodes)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := domaintest.Config(t)
			cfg.URL = url
			stores[i], errs[i] = domain.Open(context.Background(), cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	var applied int
	if err := stores[0].DB().QueryRow("SELECT COUNT(*) FROM schema_migrations").Scan(&applied); err != nil || applied != 1 {
		t.Fatalf("schema_migrations has %d rows (%v), want 1", applied, err)
	}
	// Reopening applies nothing and works.
	cfg := domaintest.Config(t)
	cfg.URL = url
	again, err := domain.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if err := again.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// While the database is unreachable every call fails with ErrUnavailable;
// when it is back, the same Store works again.
func TestUnavailableAndRecovery(t *testing.T) {
	s, sw := domaintest.Open(t, domaintest.Path(t), domaintest.Config(t))
	must[domain.Project](t)(s.CreateProject(ctx, domain.Project{Key: "P", Name: "p"}))
	sw.Off()
	for what, err := range map[string]error{
		"Ping":              s.Ping(ctx),
		"Project":           second(s.Project(ctx, "P")),
		"CreateProject":     second(s.CreateProject(ctx, domain.Project{Key: "Q", Name: "q"})),
		"VerifyPassword":    second(s.VerifyPassword(ctx, "x", "y")),
		"UpdatePullRequest": second(s.UpdatePullRequest(ctx, 1, domain.PullRequestUpdate{})),
	} {
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Errorf("%s while the database is off: %v, want ErrUnavailable", what, err)
		}
	}
	sw.On()
	testkit.Eventually(t, 5*time.Second, "the store to recover", func() bool { return s.Ping(ctx) == nil })
	must[domain.Project](t)(s.Project(ctx, "P"))
}

func second[T any](_ T, err error) error { return err }

// postgresOutage stops the server under a Store and starts it again.
func postgresOutage(t *testing.T, srv *pgServer) {
	s := srv.open(t)
	must[domain.Project](t)(s.CreateProject(ctx, domain.Project{Key: "P", Name: "p"}))
	srv.Halt()
	if _, err := s.Project(ctx, "P"); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("with the server stopped: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Ping with the server stopped: %v, want ErrUnavailable", err)
	}
	if err := srv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the store to reconnect", func() bool { return s.Ping(ctx) == nil })
	must[domain.Project](t)(s.Project(ctx, "P"))
}

// A real SQLite outage: the database file is moved away. Pooled
// connections are replaced within ConnMaxLifetime, and new ones refuse to
// create an empty database in its place: ErrUnavailable until the file is
// back.
func TestSQLiteFileMovedAway(t *testing.T) {
	path := domaintest.Path(t)
	cfg := domaintest.Config(t)
	cfg.URL, cfg.ConnMaxLifetime = path, 50*time.Millisecond
	s, err := domain.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	must[domain.Project](t)(s.CreateProject(ctx, domain.Project{Key: "P", Name: "p"}))
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Ping with the file gone: %v", err)
	}
	testkit.Eventually(t, 5*time.Second, "reads to fail with ErrUnavailable", func() bool {
		_, err := s.Project(ctx, "P")
		return errors.Is(err, domain.ErrUnavailable)
	})
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a connection created a new database file: %v", err)
	}
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the store to recover", func() bool {
		_, err := s.Project(ctx, "P")
		return err == nil && s.Ping(ctx) == nil
	})
}

func TestOpenUnreachable(t *testing.T) {
	for _, url := range []string{"/nonexistent-dir/shoal.db", "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"} {
		cfg := domaintest.Config(t)
		cfg.URL = url
		if _, err := domain.Open(ctx, cfg); !errors.Is(err, domain.ErrUnavailable) {
			t.Errorf("Open(%s) = %v, want ErrUnavailable", url, err)
		}
	}
}
