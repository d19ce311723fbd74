package domain

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// SeedConfig sizes a generated data set.
type SeedConfig struct {
	// Users, Projects, ReposPerProject, PRsPerRepo and CommentsPerPR are
	// the counts (Users excludes the admin).
	Users, Projects, ReposPerProject, PRsPerRepo, CommentsPerPR int
	// Seed makes the data set: the same seed and counts give the same
	// names, texts, states and times.
	Seed int64
	// AdminName is the admin account (default "admin"); AdminPassword its
	// password (default: random, returned in SeedResult).
	AdminName, AdminPassword string
	// UserPassword, if set, is every seeded user's password. It is hashed
	// once and the hash shared (one salt for all seeded users: they are
	// sample data, and hashing thousands of passwords would take minutes).
	// Empty: seeded users have no password and can only use tokens.
	UserPassword string
}

// SeedResult says what Seed wrote.
type SeedResult struct {
	Admin                                                 User
	AdminPassword                                         string
	Users, Projects, Repositories, PullRequests, Comments int
}

// seedEpoch is the earliest time in a seeded data set (2024-01-01 UTC).
var seedEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// Seed fills an empty database with a realistic data set in one
// transaction, deterministically from cfg.Seed (only the admin's random
// default password differs between runs). A database that already has
// projects is ErrConflict. Rows are written with multi-row inserts, so
// 10,000 pull requests take a few seconds at most.
func Seed(ctx context.Context, s *Store, cfg SeedConfig) (SeedResult, error) {
	if err := cfg.check(); err != nil {
		return SeedResult{}, err
	}
	g, err := newSeeder(s, cfg)
	if err != nil {
		return SeedResult{}, err
	}
	err = s.tx(ctx, "domain: seed", func(tx *sql.Tx) error { return g.run(ctx, tx) })
	if err != nil {
		return SeedResult{}, err
	}
	admin, err := s.UserByName(ctx, cfg.AdminName)
	g.res.Admin = admin
	return g.res, err
}

func (c *SeedConfig) check() error {
	for _, n := range []int{c.Users, c.Projects, c.ReposPerProject, c.PRsPerRepo, c.CommentsPerPR} {
		if n < 0 {
			return fmt.Errorf("%w: negative seed count", ErrInvalid)
		}
	}
	if c.AdminName == "" {
		c.AdminName = "admin"
	}
	if c.AdminPassword == "" {
		var b [12]byte
		rand.Read(b[:])
		c.AdminPassword = base64.RawURLEncoding.EncodeToString(b[:])
	}
	return nil
}

// seeder generates and writes one data set.
type seeder struct {
	s           *Store
	cfg         SeedConfig
	rng         *mrand.Rand
	adminHash   string
	userHash    string
	res         SeedResult
	base        map[string]int64 // table → highest id before seeding
	userIDs     []int64
	nextPR      int64
	nextComment int64
}

func newSeeder(s *Store, cfg SeedConfig) (*seeder, error) {
	adminHash, err := s.hashPassword(cfg.AdminPassword)
	if err != nil {
		return nil, err
	}
	userHash, err := s.hashPassword(cfg.UserPassword)
	if err != nil {
		return nil, err
	}
	rng := mrand.New(mrand.NewPCG(uint64(cfg.Seed), 0x5eed))
	return &seeder{s: s, cfg: cfg, rng: rng, adminHash: adminHash, userHash: userHash,
		res: SeedResult{AdminPassword: cfg.AdminPassword}, base: map[string]int64{}}, nil
}

func (g *seeder) run(ctx context.Context, tx *sql.Tx) error {
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM projects").Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%w: the database already has %d projects; seed an empty one", ErrConflict, n)
	}
	for _, t := range []string{"users", "projects", "repositories", "pull_requests", "comments"} {
		var max int64
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM "+t).Scan(&max); err != nil {
			return err
		}
		g.base[t] = max
	}
	g.nextPR, g.nextComment = g.base["pull_requests"], g.base["comments"]
	if err := g.users(ctx, tx); err != nil {
		return err
	}
	if err := g.projects(ctx, tx); err != nil {
		return err
	}
	return g.fixSequences(ctx, tx)
}

// users writes the admin and cfg.Users users with unique realistic names.
func (g *seeder) users(ctx context.Context, tx *sql.Tx) error {
	b := g.batch(tx, "users", "id", "name", "display_name", "email", "password_hash", "admin", "created")
	id := g.base["users"] + 1
	if err := b.add(ctx, id, g.cfg.AdminName, "Administrator", g.cfg.AdminName+"@example.com", g.adminHash, true, seedEpoch); err != nil {
		return err
	}
	taken := map[string]bool{g.cfg.AdminName: true}
	for i := 0; i < g.cfg.Users; i++ {
		id++
		first, last := pick(g.rng, firstNames), pick(g.rng, lastNames)
		name := uniqueName(taken, asciiName(first)+"."+last)
		display := title(first) + " " + title(last)
		if err := b.add(ctx, id, name, display, name+"@example.com", g.userHash, false, g.time(30)); err != nil {
			return err
		}
		g.userIDs = append(g.userIDs, id)
	}
	g.res.Users = g.cfg.Users
	return b.flush(ctx)
}

// projects writes the projects, their permissions and their repositories.
func (g *seeder) projects(ctx context.Context, tx *sql.Tx) error {
	b := g.batch(tx, "projects", "id", "project_key", "name", "description", "created")
	perms := g.batch(tx, "project_permissions", "project_id", "user_id", "perm")
	perms.parent = b
	keys := map[string]bool{}
	for i := 0; i < g.cfg.Projects; i++ {
		id := g.base["projects"] + int64(i) + 1
		name := projectNames[i%len(projectNames)]
		if i >= len(projectNames) {
			name += " " + strconv.Itoa(i/len(projectNames)+1)
		}
		key := uniqueKey(keys, projectKey(name))
		if err := b.add(ctx, id, key, name, "The "+name+" team's repositories.", g.time(10)); err != nil {
			return err
		}
		if err := g.projectPerms(ctx, perms, id); err != nil {
			return err
		}
	}
	g.res.Projects = g.cfg.Projects
	if err := firstErr(b.flush(ctx), perms.flush(ctx)); err != nil {
		return err
	}
	return g.repositories(ctx, tx)
}

// projectPerms grants a few users access: one ADMIN, some WRITE, some READ.
func (g *seeder) projectPerms(ctx context.Context, b *batch, projectID int64) error {
	seen := map[int64]bool{}
	for j := 0; j < min(len(g.userIDs), 6); j++ {
		u := pick(g.rng, g.userIDs)
		if seen[u] {
			continue
		}
		seen[u] = true
		p := PermRead
		switch {
		case j == 0:
			p = PermAdmin
		case j <= 3:
			p = PermWrite
		}
		if err := b.add(ctx, projectID, u, p); err != nil {
			return err
		}
	}
	return nil
}

func (g *seeder) repositories(ctx context.Context, tx *sql.Tx) error {
	repos := g.batch(tx, "repositories", "id", "project_id", "slug", "name", "public", "created", "last_modified")
	prs := g.batch(tx, "pull_requests", "id", "repository_id", "title", "description", "state", "from_branch", "to_branch",
		"author_id", "version", "created", "updated")
	comments := g.batch(tx, "comments", "id", "pull_request_id", "author_id", "text", "created")
	prs.parent, comments.parent = repos, prs
	id := g.base["repositories"]
	for p := 0; p < g.cfg.Projects; p++ {
		projectID := g.base["projects"] + int64(p) + 1
		for r := 0; r < g.cfg.ReposPerProject; r++ {
			id++
			slug := repoNames[r%len(repoNames)]
			if r >= len(repoNames) {
				slug += "-" + strconv.Itoa(r/len(repoNames)+1)
			}
			created := g.time(60)
			if err := repos.add(ctx, id, projectID, slug, slug, g.rng.IntN(10) < 3, created, created+g.rng.Int64N(3e10)); err != nil {
				return err
			}
			if err := g.pullRequests(ctx, prs, comments, id); err != nil {
				return err
			}
		}
	}
	g.res.Repositories = g.cfg.Projects * g.cfg.ReposPerProject
	return firstErr(repos.flush(ctx), firstErr(prs.flush(ctx), comments.flush(ctx)))
}

func (g *seeder) pullRequests(ctx context.Context, prs, comments *batch, repoID int64) error {
	if len(g.userIDs) == 0 && g.cfg.PRsPerRepo > 0 {
		g.userIDs = []int64{g.base["users"] + 1} // only the admin: they author everything
	}
	for i := 0; i < g.cfg.PRsPerRepo; i++ {
		g.nextPR++
		created := g.time(600)
		updated := created + g.rng.Int64N(14*24*3600*1000)
		version := g.rng.Int64N(4)
		if err := prs.add(ctx, g.nextPR, repoID, g.prTitle(), pick(g.rng, descriptionTexts), g.state(), g.branch(),
			pick(g.rng, []string{"main", "main", "main", "develop"}), pick(g.rng, g.userIDs), version, created, updated); err != nil {
			return err
		}
		for c := 0; c < g.cfg.CommentsPerPR; c++ {
			g.nextComment++
			at := created + int64(c+1)*g.rng.Int64N(3600*1000)
			if err := comments.add(ctx, g.nextComment, g.nextPR, pick(g.rng, g.userIDs), pick(g.rng, commentTexts), at); err != nil {
				return err
			}
		}
	}
	g.res.PullRequests += g.cfg.PRsPerRepo
	g.res.Comments += g.cfg.PRsPerRepo * g.cfg.CommentsPerPR
	return nil
}

func (g *seeder) prTitle() string {
	switch g.rng.IntN(5) {
	case 0:
		return fmt.Sprintf("Bump %s from 1.%d.%d to 1.%d.0", pick(g.rng, depNames), g.rng.IntN(20), g.rng.IntN(10), 20+g.rng.IntN(5))
	case 1:
		return fmt.Sprintf("%s %s", pick(g.rng, prVerbs), pick(g.rng, prThings))
	}
	return fmt.Sprintf("%s %s in %s", pick(g.rng, prVerbs), pick(g.rng, prThings), pick(g.rng, prPlaces))
}

func (g *seeder) state() State {
	switch n := g.rng.IntN(10); {
	case n < 7:
		return StateOpen
	case n < 9:
		return StateMerged
	}
	return StateDeclined
}

func (g *seeder) branch() string {
	return fmt.Sprintf("feature/%s-%d-%s", pick(g.rng, []string{"SHOAL", "OPS", "WEB", "CORE"}), 100+g.rng.IntN(9900), pick(g.rng, branchTopics))
}

// time is a time within days of the seed epoch.
func (g *seeder) time(days int64) int64 { return seedEpoch + g.rng.Int64N(days*24*3600*1000) }

// fixSequences moves PostgreSQL's identity sequences past the ids Seed
// wrote explicitly (SQLite's INTEGER PRIMARY KEY needs nothing).
func (g *seeder) fixSequences(ctx context.Context, tx *sql.Tx) error {
	if g.s.dialect != Postgres {
		return nil
	}
	for t := range g.base {
		q := fmt.Sprintf("SELECT setval(pg_get_serial_sequence('%s', 'id'), GREATEST((SELECT MAX(id) FROM %s), 1))", t, t)
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

func pick[T any](rng *mrand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

func uniqueName(taken map[string]bool, name string) string {
	out := name
	for n := 2; taken[out]; n++ {
		out = name + strconv.Itoa(n)
	}
	taken[out] = true
	return out
}

func uniqueKey(taken map[string]bool, key string) string {
	out := key
	for n := 2; taken[out]; n++ {
		out = key + strconv.Itoa(n)
	}
	taken[out] = true
	return out
}

// projectKey is the upper-case initials of a multi-word name, or the first
// letters of a single word ("Machine Learning" → "ML", "Payments" → "PAY").
func projectKey(name string) string {
	words := strings.Fields(name)
	if len(words) == 1 {
		return strings.ToUpper(words[0][:min(4, len(words[0]))])
	}
	var b strings.Builder
	for _, w := range words {
		if r := rune(w[0]); unicode.IsLetter(r) {
			b.WriteRune(unicode.ToUpper(r))
		}
	}
	if b.Len() == 0 {
		return "P"
	}
	return b.String()
}

// asciiName folds the few non-ASCII letters of the name lists.
func asciiName(s string) string {
	return strings.NewReplacer("ö", "o", "é", "e").Replace(s)
}

func title(s string) string {
	r := []rune(s)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}
