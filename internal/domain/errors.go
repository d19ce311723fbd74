package domain

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

// Sentinel errors; the methods wrap them with %w.
var (
	// ErrNotFound: no such row (or not visible to the caller).
	ErrNotFound = errors.New("domain: not found")
	// ErrConflict: the row changed since the caller read it (a stale
	// version), or the name is already taken.
	ErrConflict = errors.New("domain: conflict")
	// ErrInvalid: the input breaks a rule of the domain.
	ErrInvalid = errors.New("domain: invalid")
	// ErrUnavailable: the database cannot be reached now; retry later.
	ErrUnavailable = errors.New("domain: database unavailable")
	// ErrBadCredentials: unknown user, wrong password or unknown token.
	ErrBadCredentials = errors.New("domain: bad credentials")
	// ErrBusy: every password comparison slot is taken and the queue for
	// them is full (Config.BcryptConcurrency); retry later.
	ErrBusy = errors.New("domain: too many password checks at once")
)

// SQLite primary result codes that mean "the database is not usable right
// now" rather than "this statement is wrong".
const (
	sqliteBusy     = 5
	sqliteLocked   = 6
	sqliteIOErr    = 10
	sqliteFull     = 13
	sqliteCantOpen = 14
	sqliteProtocol = 15
	sqliteNotADB   = 26
	sqliteReadOnly = 8
	sqliteAuth     = 23
	sqliteCorrupt  = 11

	sqliteConstraint = 19
	sqliteUnique     = 2067 // SQLITE_CONSTRAINT_UNIQUE
	sqlitePrimaryKey = 1555 // SQLITE_CONSTRAINT_PRIMARYKEY
	sqliteForeignKey = 787  // SQLITE_CONSTRAINT_FOREIGNKEY
)

// mapErr wraps a driver error with the sentinel it means. Its text is
// what and the sentinel's meaning, never the driver's own (SQL, table and
// constraint names): that stays reachable as a *DBError's Cause, for
// logs. sql.ErrNoRows becomes ErrNotFound; context errors pass through
// unchanged.
func mapErr(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if s := sentinelOf(err); s != nil {
		if errors.Is(err, s) {
			return err
		}
		return fmt.Errorf("%s: %w", what, &DBError{Sentinel: s, Cause: err})
	}
	return fmt.Errorf("%s: %w", what, &DBError{Cause: err})
}

// DBError is a database's error behind a domain error: its text says
// what it means to a caller (the sentinel's meaning, or "database error"
// when it means nothing the domain knows), and Cause keeps the driver's
// own, for logs only. errors.Is matches both Sentinel and Cause.
type DBError struct {
	Sentinel error // ErrNotFound, ErrConflict, ErrInvalid, ErrUnavailable, or nil
	Cause    error
}

func (e *DBError) Error() string {
	switch e.Sentinel {
	case nil:
		return "database error"
	case ErrConflict:
		return "conflict: already exists"
	case ErrInvalid:
		return "invalid: refers to something that does not exist, or breaks a rule"
	}
	return strings.TrimPrefix(e.Sentinel.Error(), "domain: ")
}

// Unwrap is the sentinel and the cause.
func (e *DBError) Unwrap() []error {
	if e.Sentinel == nil {
		return []error{e.Cause}
	}
	return []error{e.Sentinel, e.Cause}
}

// sentinelOf is the sentinel err stands for, or nil.
func sentinelOf(err error) error {
	for _, s := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnavailable, ErrBadCredentials} {
		if errors.Is(err, s) {
			return s
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return sqliteSentinel(se.Code())
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgSentinel(pe.Code)
	}
	if unreachable(err) {
		return ErrUnavailable
	}
	return nil
}

func sqliteSentinel(code int) error {
	switch code {
	case sqliteUnique, sqlitePrimaryKey:
		return ErrConflict
	case sqliteForeignKey:
		return ErrInvalid
	}
	switch code & 0xff {
	case sqliteBusy, sqliteLocked, sqliteIOErr, sqliteFull, sqliteCantOpen, sqliteProtocol,
		sqliteNotADB, sqliteReadOnly, sqliteAuth, sqliteCorrupt:
		return ErrUnavailable
	case sqliteConstraint:
		return ErrInvalid
	}
	return nil
}

// pgSentinel maps SQLSTATE classes: 08 connection exception, 53
// insufficient resources, 57P admin shutdown / cannot connect now, 23505
// unique violation, 23503 foreign key, 23514 check, 22 data exception.
func pgSentinel(code string) error {
	switch {
	case code == "23505":
		return ErrConflict
	case code == "23503", code == "23514", code == "23502", len(code) == 5 && code[:2] == "22":
		return ErrInvalid
	case len(code) == 5 && (code[:2] == "08" || code[:2] == "53" || code[:3] == "57P"):
		return ErrUnavailable
	}
	return nil
}

// unreachable reports connection-level failures from any driver.
func unreachable(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &ne), errors.As(err, &ce):
		return true
	}
	return false
}
