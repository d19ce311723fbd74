package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/domain"
)

// dbFileName is the shared SQLite database in a cluster directory.
const dbFileName = "shoal.db"

// dbURL is the database a command uses: --db if given, else the SQLite
// file in the cluster directory.
func dbURL(db, dataDir string) string {
	if db != "" {
		return db
	}
	return filepath.Join(dataDir, dbFileName)
}

func init() {
	register(&command{name: "seed", bind: bindSeed,
		summary: "Fill an empty database with a generated data set and print the admin's credentials."})
}

func bindSeed(s *cli.Set) runFunc {
	dataDir := "shoal-data"
	var db, reposDir string
	cfg := defaultSeed()
	s.String(&db, "db", "database: a postgres:// URL or a SQLite file (default <data-dir>/"+dbFileName+")")
	s.String(&dataDir, "data-dir", "cluster directory holding the shared SQLite database")
	s.String(&reposDir, "repos-dir", "where the seeded repositories' bare git repositories go (default <data-dir>/repos, as the nodes of 'shoal up' use)")
	bindSeedSizes(s, &cfg)
	return func(ctx context.Context, sio stdio, _ []string) error {
		if err := checkSeedFlags(cfg); err != nil {
			return err
		}
		url := dbURL(db, dataDir)
		if db == "" {
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return err
			}
		}
		if reposDir == "" {
			reposDir = filepath.Join(dataDir, "repos")
		}
		return seedDatabase(ctx, url, reposDir, cfg, sio.out)
	}
}

// defaultSeed is the default data set.
func defaultSeed() domain.SeedConfig {
	return domain.SeedConfig{Users: 200, Projects: 10, ReposPerProject: 10, PRsPerRepo: 20, CommentsPerPR: 3, Seed: 1, AdminName: "admin"}
}

// bindSeedSizes binds the data set's size and credentials ('shoal seed'
// and 'shoal up --seed' share them).
func bindSeedSizes(s *cli.Set, cfg *domain.SeedConfig) {
	s.Int(&cfg.Users, "users", "users besides the admin")
	s.Int(&cfg.Projects, "projects", "projects")
	s.Int(&cfg.ReposPerProject, "repos-per-project", "repositories per project")
	s.Int(&cfg.PRsPerRepo, "prs-per-repo", "pull requests per repository")
	s.Int(&cfg.CommentsPerPR, "comments-per-pr", "comments per pull request")
	s.Int64(&cfg.Seed, "seed-number", "the data set is a function of this number and the sizes")
	s.String(&cfg.AdminName, "admin", "the admin account's name")
	s.String(&cfg.AdminPassword, "admin-password", "the admin's password (default: random, printed)")
	s.String(&cfg.UserPassword, "user-password", "every seeded user's password (default: none; users log in with tokens only)")
}

func checkSeedFlags(cfg domain.SeedConfig) error {
	for name, n := range map[string]int{"users": cfg.Users, "projects": cfg.Projects, "repos-per-project": cfg.ReposPerProject,
		"prs-per-repo": cfg.PRsPerRepo, "comments-per-pr": cfg.CommentsPerPR} {
		if n < 0 {
			return usagef("--%s: %d is negative", name, n)
		}
	}
	if !domain.ValidUserName(cfg.AdminName) {
		return usagef("--admin: %q is not a valid user name", cfg.AdminName)
	}
	return nil
}

// seedDatabase opens the database (applying the schema) and seeds it,
// creates an empty bare git repository under reposDir for every seeded
// repository, and prints what it wrote and the admin's credentials to out.
func seedDatabase(ctx context.Context, url, reposDir string, cfg domain.SeedConfig, out io.Writer) error {
	store, err := domain.Open(ctx, domain.Config{URL: url, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fmt.Errorf("opening %s: %w", url, err)
	}
	defer store.Close()
	start := time.Now()
	res, err := domain.Seed(ctx, store, cfg)
	if err != nil {
		return err
	}
	if err := initSeededRepos(ctx, store, reposDir); err != nil {
		return err
	}
	fmt.Fprintf(out, "seeded %d users, %d projects, %d repositories (bare git repositories in %s), %d pull requests, %d comments in %v\n",
		res.Users, res.Projects, res.Repositories, reposDir, res.PullRequests, res.Comments, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(out, "admin credentials: %s / %s\n", res.Admin.Name, res.AdminPassword)
	return nil
}

// initSeededRepos creates the bare repository of every repository in the
// database that has none yet, a few 'git init' at a time.
func initSeededRepos(ctx context.Context, store *domain.Store, reposDir string) error {
	var names [][2]string
	for start := 0; ; start += 1000 {
		keys, err := store.ProjectKeys(ctx, start, 1000)
		if err != nil {
			return err
		}
		for _, key := range keys {
			for rs := 0; ; rs += 1000 {
				slugs, err := store.RepositorySlugs(ctx, key, rs, 1000)
				if err != nil {
					return err
				}
				for _, slug := range slugs {
					names = append(names, [2]string{key, slug})
				}
				if len(slugs) < 1000 {
					break
				}
			}
		}
		if len(keys) < 1000 {
			break
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(2, runtime.NumCPU()))
	for _, n := range names {
		g.Go(func() error {
			err := gitfront.InitBare(ctx, reposDir, n[0], n[1])
			if errors.Is(err, gitfront.ErrExists) {
				return nil
			}
			return err
		})
	}
	return g.Wait()
}
