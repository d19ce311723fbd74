package domain

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"golang.org/x/crypto/bcrypt"
	"modernc.org/sqlite" // registers "sqlite"

	"github.com/shoal-dev/shoal/internal/config"
)

// Dialect is the SQL flavour of a Store's database.
type Dialect string

// Dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Config configures a Store.
type Config struct {
	// URL is the database: a postgres:// or postgresql:// URL for
	// PostgreSQL, otherwise the path of a SQLite file (a "file:" URI is
	// accepted too). The SQLite file is created if missing.
	URL string
	// BusyTimeout is how long SQLite waits for another connection's (or
	// node's) write lock before the statement fails with ErrUnavailable
	// (default 5 s).
	BusyTimeout time.Duration
	// MaxOpenConns bounds the connection pool (default 16).
	MaxOpenConns int
	// ConnMaxLifetime is when a pooled connection is replaced (default 5
	// s). With SQLite it bounds how long a connection keeps reading a
	// database file that was moved away: new connections do not create a
	// missing file, they fail with ErrUnavailable.
	ConnMaxLifetime time.Duration
	// BcryptCost is the cost of new password hashes (default
	// bcrypt.DefaultCost, 10: about 50-100 ms per hash on one core, which
	// is why successful verifications are remembered for PasswordCacheTTL).
	// Tests and seeds may use bcrypt.MinCost.
	BcryptCost int
	// BcryptConcurrency bounds the password comparisons (bcrypt) that run
	// at once (default half the cores, at least 1), so that password
	// guessing cannot take every core; BcryptQueue bounds those waiting
	// for a slot (default 4 × BcryptConcurrency): a check finding it full
	// fails at once with ErrBusy.
	BcryptConcurrency, BcryptQueue int
	// PasswordCacheTTL is how long a successful password verification is
	// remembered (default 1 minute; negative disables the cache). Only
	// successes are remembered, keyed by an HMAC of the user, the stored
	// hash and the password, so a changed password is a miss.
	PasswordCacheTTL time.Duration
	// Now is the clock for created/updated times (default time.Now).
	Now func() time.Time
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
}

// DefaultConfig is the database's defaults. Validate fills the zero
// settings from it.
func DefaultConfig() Config {
	return Config{BusyTimeout: 5 * time.Second, MaxOpenConns: 16, ConnMaxLifetime: 5 * time.Second,
		BcryptCost: bcrypt.DefaultCost, PasswordCacheTTL: time.Minute}
}

// Validate fills the zero settings from DefaultConfig and rejects
// nonsense (a refused setting is a *config.FieldError).
func (c *Config) Validate() error {
	if c.ConnMaxLifetime < 0 {
		return config.Invalid("domain", "ConnMaxLifetime", c.ConnMaxLifetime, "a duration of at least 0 (0: the default)")
	}
	d := DefaultConfig()
	if c.BusyTimeout <= 0 {
		c.BusyTimeout = d.BusyTimeout
	}
	if c.MaxOpenConns <= 0 {
		c.MaxOpenConns = d.MaxOpenConns
	}
	if c.ConnMaxLifetime == 0 {
		c.ConnMaxLifetime = d.ConnMaxLifetime
	}
	if c.BcryptCost == 0 {
		c.BcryptCost = d.BcryptCost
	}
	if c.BcryptConcurrency <= 0 {
		c.BcryptConcurrency = max(1, runtime.NumCPU()/2)
	}
	if c.BcryptQueue <= 0 {
		c.BcryptQueue = 4 * c.BcryptConcurrency
	}
	if c.BcryptCost < bcrypt.MinCost || c.BcryptCost > bcrypt.MaxCost {
		return fmt.Errorf("%w: bcrypt cost %d outside [%d, %d]", ErrInvalid, c.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if c.PasswordCacheTTL == 0 {
		c.PasswordCacheTTL = d.PasswordCacheTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Store is the domain over one database. Its methods are safe for
// concurrent use.
type Store struct {
	cfg       Config
	db        *sql.DB
	dialect   Dialect
	passwords *verifiedCache
	bcrypts   *bcryptGate
	dummy     struct {
		once sync.Once
		hash []byte
	}
	file  string   // the SQLite file, when Open knows it
	stmts sync.Map // query → *sql.Stmt, for the hot reads on SQLite
}

// Open opens the database cfg.URL names and applies the schema
// migrations it lacks. It fails with ErrUnavailable if the database cannot
// be reached.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	driverName, dsn, dialect, err := dataSource(cfg)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, fmt.Errorf("domain: open: %w", err)
	}
	s, err := OpenDB(ctx, db, dialect, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	if dialect == SQLite {
		s.file = sqlitePath(cfg.URL)
	}
	return s, nil
}

// OpenDB is Open over a database handle the caller made (tests wrap the
// driver this way). The Store owns db from then on: Close closes it. A
// SQLite handle should use the pragmas SQLiteDSN sets.
func OpenDB(ctx context.Context, db *sql.DB, dialect Dialect, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dialect != SQLite && dialect != Postgres {
		return nil, fmt.Errorf("%w: dialect %q", ErrInvalid, dialect)
	}
	db.SetMaxOpenConns(cfg.MaxOpenConns)
	db.SetMaxIdleConns(cfg.MaxOpenConns)
	db.SetConnMaxIdleTime(cfg.ConnMaxLifetime)
	db.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	s := &Store{cfg: cfg, db: db, dialect: dialect, passwords: newVerifiedCache(cfg.PasswordCacheTTL, cfg.Now),
		bcrypts: newBcryptGate(cfg.BcryptConcurrency, cfg.BcryptQueue)}
	if dialect == SQLite {
		if err := useWAL(ctx, db, cfg.BusyTimeout); err != nil {
			return nil, err
		}
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// dataSource picks the driver for cfg.URL.
func dataSource(cfg Config) (driverName, dsn string, d Dialect, err error) {
	u := cfg.URL
	if strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://") {
		return "pgx", u, Postgres, nil
	}
	if u == "" {
		return "", "", "", fmt.Errorf("%w: empty database URL", ErrInvalid)
	}
	if err := createFile(sqlitePath(u)); err != nil {
		return "", "", "", err
	}
	return "sqlite", SQLiteDSN(u, cfg.BusyTimeout), SQLite, nil
}

// sqlitePath is the file of a SQLite URL (a path or a file: URI).
func sqlitePath(u string) string {
	u = strings.TrimPrefix(u, "file:")
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	return u
}

// createFile creates an empty database file if there is none (SQLite
// takes an empty file as a new database): connections open it in mode=rw
// and never create it themselves. The file is its owner's alone (0600,
// which SQLite gives its -wal and -shm files too); an existing one that
// others may read is made so.
func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("%w: creating the database file: %v", ErrUnavailable, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(st.Mode().Perm() &^ 0o077); err != nil {
			return fmt.Errorf("%w: making the database file private: %v", ErrUnavailable, err)
		}
	}
	return nil
}

// SQLiteDSN is the modernc.org/sqlite data source for the file at path,
// which must exist (mode=rw: a database file that disappeared is an
// outage, not a fresh empty database): WAL journal (readers never block the writer), a busy timeout (writers
// from other connections and processes queue instead of failing), foreign
// keys on, and transactions that take the write lock when they begin
// (BEGIN IMMEDIATE), so two read-then-write transactions cannot deadlock
// on the lock upgrade.
func SQLiteDSN(path string, busy time.Duration) string {
	path = strings.TrimPrefix(path, "file:")
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	q.Set("mode", "rw")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return "file:" + path + "&" + q.Encode()
	}
	return "file:" + path + "?" + q.Encode()
}

// useWAL switches the database to WAL journaling, which the file then
// keeps, before anything else uses it. SQLite answers a change of journal
// mode that meets another connection's lock with SQLITE_BUSY at once,
// without waiting in the busy timeout: several processes opening a new
// database together (the nodes of a new cluster) would each fail one in
// tens of times, in the journal_mode pragma SQLiteDSN runs on every new
// connection. So the first switch is made here, retrying a busy answer
// for up to the busy timeout; once the file is in WAL mode the pragma
// changes nothing and takes no lock.
func useWAL(ctx context.Context, db *sql.DB, busy time.Duration) error {
	deadline := time.Now().Add(busy)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("domain: open: %w: journal mode is %q, not wal", ErrUnavailable, mode)
			}
			return nil
		}
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqliteBusy || time.Now().After(deadline) {
			return mapErr(err, "domain: open: journal mode")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Close closes the database. Safe twice.
func (s *Store) Close() error {
	s.stmts.Range(func(k, v any) bool {
		v.(*sql.Stmt).Close()
		s.stmts.Delete(k)
		return true
	})
	err := s.db.Close()
	if errors.Is(err, sql.ErrConnDone) {
		return nil
	}
	return err
}

// Dialect is the database's SQL flavour.
func (s *Store) Dialect() Dialect { return s.dialect }

// DB is the database handle, for tools and tests; the Store owns it.
func (s *Store) DB() *sql.DB { return s.db }

// Ping checks that the database answers a query now (for readiness); the
// error wraps ErrUnavailable when it does not.
func (s *Store) Ping(ctx context.Context) error {
	if s.file != "" {
		// Pooled connections keep reading a file that was moved away.
		if _, err := os.Stat(s.file); err != nil {
			return fmt.Errorf("domain: ping: %w: %v", ErrUnavailable, err)
		}
	}
	var n int
	err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&n)
	return mapErr(err, "domain: ping")
}

// now is the current time in Unix milliseconds.
func (s *Store) now() int64 { return s.cfg.Now().UnixMilli() }

// q rewrites a query written with ? placeholders for the dialect:
// PostgreSQL numbers them ($1, $2, ...). Queries never contain a literal
// question mark.
func (s *Store) q(query string) string {
	if s.dialect != Postgres || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// queryRow runs a hot single-row read. On SQLite it goes through a
// prepared statement kept for the Store's life (modernc.org/sqlite would
// otherwise parse the SQL on every call, which costs more than running
// it); pgx already caches statements per connection. If preparing fails
// the query runs unprepared and reports the failure itself.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	query = s.q(query)
	if s.dialect != SQLite {
		return s.db.QueryRowContext(ctx, query, args...)
	}
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt).QueryRowContext(ctx, args...)
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return s.db.QueryRowContext(ctx, query, args...)
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		st = prev.(*sql.Stmt)
	}
	return st.QueryRowContext(ctx, args...)
}

// tx runs fn in a transaction, committing if it returns nil. On SQLite the
// transaction holds the write lock from its start (see SQLiteDSN).
func (s *Store) tx(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(err, what)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return mapErr(err, what)
	}
	return mapErr(tx.Commit(), what)
}
