package domain

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations
var migrationFS embed.FS

// migration is one schema step: migrations/<dialect>/<version>_<name>.sql.
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrationLock is the PostgreSQL advisory lock key that serializes
// concurrent migrators ("shoal" in ASCII).
const migrationLock = 0x73686f616c

// migrate applies the missing migrations in one transaction. Several
// processes may call it at once on the same database: on SQLite the
// transaction begins IMMEDIATE (it holds the write lock, and the others
// wait in the busy timeout), on PostgreSQL it takes a transaction-scoped
// advisory lock first. Whoever comes second finds the versions recorded
// in schema_migrations and applies nothing.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations(s.dialect)
	if err != nil {
		return err
	}
	return s.tx(ctx, "domain: migrate", func(tx *sql.Tx) error {
		if s.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLock)); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied BIGINT NOT NULL)`); err != nil {
			return err
		}
		done, err := appliedVersions(ctx, tx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if !done[m.version] {
				if err := s.apply(ctx, tx, m); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (s *Store) apply(ctx context.Context, tx *sql.Tx, m migration) error {
	for _, st := range m.stmts {
		if _, err := tx.ExecContext(ctx, st); err != nil {
			return fmt.Errorf("migration %d_%s: %w", m.version, m.name, err)
		}
	}
	_, err := tx.ExecContext(ctx, s.q("INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)"),
		m.version, m.name, s.now())
	s.cfg.Logger.Info("domain: applied migration", "version", m.version, "name", m.name, "dialect", s.dialect)
	return err
}

func appliedVersions(ctx context.Context, tx *sql.Tx) (map[int]bool, error) {
	rows, err := tx.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		done[v] = true
	}
	return done, rows.Err()
}

// loadMigrations reads the dialect's migrations, ordered by version.
func loadMigrations(d Dialect) ([]migration, error) {
	dir := path.Join("migrations", string(d))
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("domain: migrations for %s: %w", d, err)
	}
	var ms []migration
	for _, e := range entries {
		m, err := parseMigration(dir, e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

func parseMigration(dir, file string) (migration, error) {
	base, ok := strings.CutSuffix(file, ".sql")
	num, name, ok2 := strings.Cut(base, "_")
	v, err := strconv.Atoi(num)
	if !ok || !ok2 || err != nil || v <= 0 {
		return migration{}, fmt.Errorf("domain: migration file %q is not <version>_<name>.sql", file)
	}
	b, err := migrationFS.ReadFile(path.Join(dir, file))
	if err != nil {
		return migration{}, err
	}
	return migration{version: v, name: name, stmts: splitStatements(string(b))}, nil
}

// splitStatements splits a migration at semicolons that end a line, and
// drops comment-only pieces. Migrations hold no triggers or literals with
// such semicolons.
func splitStatements(src string) []string {
	var out []string
	for _, piece := range strings.Split(src, ";\n") {
		var b strings.Builder
		for _, line := range strings.Split(piece, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
				b.WriteString(line)
				b.WriteByte('\n')
			}
		}
		if st := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(b.String()), ";")); st != "" {
			out = append(out, st)
		}
	}
	return out
}
