package rest

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/l2cache"
)

// Prefix is where the API lives.
const Prefix = "/rest/api/1.0"

// Config configures the API.
type Config struct {
	// DB is the domain's store. Required.
	DB *domain.Store
	// Cache is the node's L2 cache; nil reads straight from the database
	// (for comparisons and tools).
	Cache *l2cache.Cache
	// Logger receives logs (default slog.Default()).
	Logger *slog.Logger
	// Principal returns the caller's user ID, with ok false for an
	// anonymous caller. Nil: every caller is anonymous.
	Principal func(*http.Request) (userID int64, ok bool)
	// OnRepositoryCreated, if set, runs after a repository's row is
	// committed (to create the bare git repository, whose HEAD names
	// defaultBranch: the create call's, checked by
	// domain.ValidBranchName, or "" for the default). If it fails, the row
	// is deleted again and the request fails with 500. It must honour ctx.
	OnRepositoryCreated func(ctx context.Context, project, slug, defaultBranch string) error
	// MaxBodyBytes bounds request bodies (default 1 MiB); larger is 413.
	MaxBodyBytes int64
	// DefaultLimit and MaxLimit bound page sizes (default 25 and 1000).
	DefaultLimit, MaxLimit int
	// PermissionTTL is how long a node reuses the database's decision on
	// whether a user may read a private repository (default 1 s;
	// negative: ask the database on every read). A grant or a revocation
	// made with `shoal user grant` reaches reads of pull requests,
	// comments and repositories within it; writes always ask the
	// database.
	PermissionTTL time.Duration
}

func (c *Config) validate() error {
	if c.DB == nil {
		return errors.New("rest: Config.DB is required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Principal == nil {
		c.Principal = func(*http.Request) (int64, bool) { return 0, false }
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.DefaultLimit <= 0 {
		c.DefaultLimit = 25
	}
	if c.MaxLimit <= 0 {
		c.MaxLimit = 1000
	}
	c.DefaultLimit = min(c.DefaultLimit, c.MaxLimit)
	if c.PermissionTTL == 0 {
		c.PermissionTTL = time.Second
	}
	return nil
}

// api is the handler state; its methods are safe for concurrent use.
type api struct {
	cfg     Config
	db      *domain.Store
	regions regions
	perms   *permCache // nil: no reuse
	router  router
}

// New returns the API's handler, serving paths under Prefix. It creates
// the cache regions it uses (see RegionNames).
func New(cfg Config) (http.Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rg, err := newRegions(cfg.Cache)
	if err != nil {
		return nil, err
	}
	a := &api{cfg: cfg, db: cfg.DB, regions: rg, perms: newPermCache(cfg.PermissionTTL)}
	a.routes()
	return a, nil
}
