// Package domain is shoal's sample git-hosting domain over SQL: users and
// their access tokens, projects, repositories, pull requests, comments and
// permissions — the rows a Bitbucket-like node keeps in its shared
// database and caches in the L2 cache.
//
// A Store runs on an embedded SQLite file (the default: modernc.org/sqlite
// in WAL mode, shared by the nodes of a local cluster) or on PostgreSQL
// (a postgres:// URL, through pgx). The schema is embedded and applied by
// Open, once, even when several nodes open the same database at the same
// moment.
//
// # Errors
//
// Every method takes a context and returns errors that wrap one of the
// package's sentinels where one applies: ErrNotFound, ErrConflict (a stale
// version or a duplicate name), ErrInvalid (input the domain refuses),
// ErrUnavailable (the database cannot be reached: a lost connection, a file
// that cannot be opened, a lock held past the busy timeout) and
// ErrBadCredentials. Callers map them with errors.Is; anything else is an
// internal error.
//
// # Rules the database does not enforce by itself
//
//   - Pull request updates are optimistic: the caller sends the version it
//     read, and a mismatch is ErrConflict. Each update increments the
//     version.
//   - Secrets are never stored: passwords as bcrypt hashes, access tokens as
//     SHA-256 digests of 32 random bytes. Comparisons are constant-time.
//   - Permissions are the highest of: ADMIN for an admin user, the user's
//     project permission, the user's repository permission, and READ for
//     anyone (even anonymous) on a public repository.
package domain
