package packcache

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
)

// Config configures a Cache. Build it with DefaultConfig and adjust; New
// validates it, fills the zero fields with defaults and rejects nonsense.
type Config struct {
	// Dir holds the cache files. The cache owns the files named pc-* in
	// it and removes them at start. Required.
	Dir string
	// MaxBytes is the budget of published entries
	// (--pack-cache-max-bytes); least-recently-read entries are evicted
	// to stay within it. Files still being produced, and evicted files
	// still being read, are not counted. Default 1 GiB.
	MaxBytes int64
	// MinFree is the free-space floor of Dir's file system
	// (--pack-cache-min-free): below it no entry is produced and requests
	// go straight to git, and Sweep evicts entries. 0 means no floor.
	MinFree uint64
	// TTL is how long a published entry may be served. Default 24h.
	TTL time.Duration
	// ProduceTimeout bounds one git process writing an entry; it runs on
	// when its readers leave. Default 30m.
	ProduceTimeout time.Duration
	// MaxRequestBytes is the largest request body decoded; longer ones
	// bypass the cache. Default 4 MiB (about 60,000 wants).
	MaxRequestBytes int
	// LsRefs also caches v2 ls-refs responses (the ref advertisement)
	// per ref generation. Off by default, like Bitbucket's ref
	// advertisement cache: a listing is only as fresh as the generation,
	// so it is right only when every ref change goes through a push that
	// bumps it (the node turns it on with --ref-advert-cache).
	LsRefs bool
	// GitPath is the git binary. Default: "git" on the PATH.
	GitPath string
	// GitEnv is added to the environment of every git process.
	GitEnv []string
	// Generations holds the repositories' ref generations. Default: a
	// fresh MemGenerations, right for a single node.
	Generations Generations
	// Announce, if set, tells the other nodes that a repository's refs
	// are changing or changed (BeginPush and Push.End call it; the node
	// publishes on the bus, whose receivers call Forget). Best effort:
	// the generation in every key is what makes a lost message harmless.
	Announce func(repo string) error
	// Clock returns the time, for TTLs and recency. Default time.Now.
	Clock func() time.Time
	// Logger receives production failures and bypass reasons at debug
	// level. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the production defaults for a cache in dir, with a
// 1 GiB free-space floor.
func DefaultConfig(dir string) Config {
	return Config{
		Dir: dir, MaxBytes: 1 << 30, MinFree: 1 << 30, TTL: 24 * time.Hour,
		ProduceTimeout: 30 * time.Minute, MaxRequestBytes: 4 << 20,
	}
}

// Validate fills the zero settings from DefaultConfig (but MinFree,
// whose zero means no floor) and rejects impossible ones (a refused
// setting is a *config.FieldError).
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("packcache: Config.Dir is required")
	}
	switch {
	case c.MaxBytes < 0:
		return config.Invalid("packcache", "MaxBytes", c.MaxBytes, "a size of at least 0 (0: the default)")
	case c.TTL < 0:
		return config.Invalid("packcache", "TTL", c.TTL, "a duration of at least 0 (0: the default)")
	case c.ProduceTimeout < 0 || c.MaxRequestBytes < 0:
		return errors.New("packcache: negative ProduceTimeout or MaxRequestBytes")
	}
	d := DefaultConfig(c.Dir)
	setDefault(&c.MaxBytes, d.MaxBytes)
	setDefault(&c.TTL, d.TTL)
	setDefault(&c.ProduceTimeout, d.ProduceTimeout)
	setDefault(&c.MaxRequestBytes, d.MaxRequestBytes)
	if c.GitPath == "" {
		p, err := exec.LookPath("git")
		if err != nil {
			return fmt.Errorf("packcache: no git: %w", err)
		}
		c.GitPath = p
	}
	if c.Generations == nil {
		c.Generations = &MemGenerations{}
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}
