// Package domaintest opens domain Stores for other packages' tests: a
// SQLite file in the test's temporary directory, with a switch that makes
// the database unreachable and reachable again, as a crashed database
// server or an unreadable file would.
package domaintest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"modernc.org/sqlite"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// Switch makes a database opened by Open unreachable (Off) and reachable
// again (On). While off, connections in the pool fail with
// driver.ErrBadConn and new ones fail the way SQLite does for a file it
// cannot open (SQLITE_CANTOPEN), so the Store sees the errors a real
// outage gives.
type Switch struct{ off atomic.Bool }

// Off cuts the database off.
func (s *Switch) Off() { s.off.Store(true) }

// On restores it.
func (s *Switch) On() { s.off.Store(false) }

// Config is the preset for tests: the cheapest bcrypt cost.
func Config(t testing.TB) domain.Config {
	return domain.Config{BcryptCost: bcrypt.MinCost, Logger: testkit.Logger(t)}
}

// Path is a fresh database file name in the test's temporary directory.
func Path(t testing.TB) string { return filepath.Join(t.TempDir(), "shoal.db") }

// Open opens a Store on the SQLite file at path (Path(t) for a fresh one)
// through a switchable driver; the Store is closed when the test ends.
func Open(t testing.TB, path string, cfg domain.Config) (*domain.Store, *Switch) {
	t.Helper()
	sw := &Switch{}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644) // the DSN does not create it
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if cfg.BusyTimeout <= 0 {
		cfg.BusyTimeout = 5 * time.Second
	}
	db := sql.OpenDB(&connector{dsn: domain.SQLiteDSN(path, cfg.BusyTimeout), sw: sw})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := domain.OpenDB(ctx, db, domain.SQLite, cfg)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, sw
}

var sqliteDriver = &sqlite.Driver{}

// unopenable is a DSN SQLite cannot open: a file in a missing directory.
const unopenable = "file:/nonexistent-shoal-domaintest/db.sqlite?mode=rw"

type connector struct {
	dsn string
	sw  *Switch
}

func (c *connector) Connect(ctx context.Context) (driver.Conn, error) {
	if c.sw.off.Load() {
		return sqliteDriver.Open(unopenable)
	}
	inner, err := sqliteDriver.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: inner, sw: c.sw}, nil
}

func (c *connector) Driver() driver.Driver { return sqliteDriver }

// conn forwards to the SQLite connection while the switch is on.
type conn struct {
	driver.Conn
	sw *Switch
}

func (c *conn) check() error {
	if c.sw.off.Load() {
		return driver.ErrBadConn
	}
	return nil
}

func (c *conn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

func (c *conn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
}

func (c *conn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, q)
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *conn) ResetSession(ctx context.Context) error { return c.check() }

func (c *conn) IsValid() bool { return !c.sw.off.Load() }
