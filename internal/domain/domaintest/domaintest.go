// Package domaintest opens domain Stores for other packages' tests: a
// SQLite file in the test's temporary directory, with a switch that makes
// the database unreachable and reachable again, as a crashed database
// server or an unreadable file would.
package domaintest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
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
// outage gives. It can also lose the answer of one write
// (LoseNextAnswer).
type Switch struct {
	off  atomic.Bool
	lose atomic.Bool
}

// ErrAnswerLost is what a write whose answer LoseNextAnswer lost returns.
var ErrAnswerLost = errors.New("domaintest: the connection broke after the write committed, before its answer arrived")

// LoseNextAnswer makes the next write — a statement that changes rows
// outside a transaction, or a transaction's commit — run to its end and
// then fail with ErrAnswerLost, as a write does whose connection broke
// after the database committed it: the change is in the database, and
// its caller cannot know.
func (s *Switch) LoseNextAnswer() { s.lose.Store(true) }

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
	sw   *Switch
	inTx bool // a transaction is open: its statements are not writes on their own
}

// losing reports whether q is a write whose answer is to be lost (and
// disarms the switch if so).
func (c *conn) losing(q string) bool {
	if c.inTx {
		return false
	}
	verb, _, _ := strings.Cut(strings.TrimSpace(q), " ")
	switch strings.ToUpper(verb) {
	case "INSERT", "UPDATE", "DELETE":
		return c.sw.lose.CompareAndSwap(true, false)
	}
	return false
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
	res, err := c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
	if err == nil && c.losing(q) {
		return nil, ErrAnswerLost
	}
	return res, err
}

func (c *conn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	rows, err := c.Conn.(driver.QueryerContext).QueryContext(ctx, q, args)
	if err != nil || !c.losing(q) {
		return rows, err
	}
	// A write with RETURNING runs as its rows are read: read them all,
	// so that it commits, and lose them.
	dest := make([]driver.Value, len(rows.Columns()))
	for err == nil {
		err = rows.Next(dest)
	}
	rows.Close()
	if err != io.EOF {
		return nil, err
	}
	return nil, ErrAnswerLost
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
	tx, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	c.inTx = true
	return &txn{Tx: tx, c: c}, nil
}

// txn loses its commit's answer when the switch says so.
type txn struct {
	driver.Tx
	c *conn
}

func (t *txn) Commit() error {
	t.c.inTx = false
	if err := t.Tx.Commit(); err != nil {
		return err
	}
	if t.c.sw.lose.CompareAndSwap(true, false) {
		return ErrAnswerLost
	}
	return nil
}

func (t *txn) Rollback() error {
	t.c.inTx = false
	return t.Tx.Rollback()
}

func (c *conn) ResetSession(ctx context.Context) error { return c.check() }

func (c *conn) IsValid() bool { return !c.sw.off.Load() }
