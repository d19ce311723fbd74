package gitfront

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/internal/config"
)

// Pools configures the three pools; zero fields take DefaultPools'.
type Pools struct {
	Upload, Receive, Web PoolConfig
}

// DefaultPools sizes the pools for this machine, after Bitbucket's
// defaults: git upload-pack is CPU-bound (pack-objects), so its bound is
// 1.5 × the cores and clones queue up to 5 minutes rather than fail;
// pushes get the cores; web requests are short and I/O-bound, so many run
// at once and a queue wait over 10 s means the node is overloaded.
func DefaultPools() Pools {
	cpus := runtime.NumCPU()
	return Pools{
		Upload:  PoolConfig{Concurrency: max(2, cpus*3/2), Queue: 256, QueueTimeout: 5 * time.Minute, RetryAfter: 10 * time.Second},
		Receive: PoolConfig{Concurrency: max(2, cpus), Queue: 64, QueueTimeout: 2 * time.Minute, RetryAfter: 10 * time.Second},
		Web:     PoolConfig{Concurrency: 64, Queue: 512, QueueTimeout: 10 * time.Second, RetryAfter: 2 * time.Second},
	}
}

// Config configures a Front.
type Config struct {
	// Web serves every request that is not git (REST, UI, cluster API)
	// and the Unpooled paths. Required.
	Web http.Handler
	// Git, when its ReposDir is set, serves /scm/; otherwise /scm/ goes
	// to Web. Its Logger defaults to Logger.
	Git GitConfig
	// Authenticator checks credentials on pooled requests, web and git
	// alike. Required.
	Authenticator Authenticator
	// Pools bounds the pools; zero fields take DefaultPools'.
	Pools Pools
	// Unpooled are exact paths served by Web outside any pool and without
	// authentication, so that health checks answer under any load;
	// default /healthz, /readyz, /metrics.
	Unpooled []string
	// DrainQuiet is how long Drain waits after the last pooled request
	// before it reports the front idle, so that a git client that got its
	// ref advertisement can still send the POST that follows; default 1s,
	// negative for none.
	DrainQuiet time.Duration
	// Body bounds how slowly a request body may arrive and which bodies
	// are read before the pool; zero fields take DefaultBody's.
	Body BodyConfig
	// BodyLimit, if set, is the largest body a web route takes (0: not
	// known); a request announcing a longer one is refused with 413
	// before any of it is read. Git routes' limits are GitConfig's.
	BodyLimit func(r *http.Request) int64
	// Logins bounds password guessing (failed authentications per
	// client address, username and address, and username). The zero
	// value takes DefaultLoginLimits; NoLoginLimits turns it off.
	Logins LoginLimits
	// NoLoginLimits turns the bounds on failed logins off.
	NoLoginLimits bool
	// LoginGuard, if set, is the guard to use instead of one made from
	// Logins (so that other login paths, a login form, share it).
	LoginGuard *LoginGuard
	// Logger receives failed logins and failures; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Web == nil || c.Authenticator == nil {
		return fmt.Errorf("%w: Config needs Web and Authenticator", ErrConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Git.Logger == nil {
		c.Git.Logger = c.Logger
	}
	if c.DrainQuiet == 0 {
		c.DrainQuiet = time.Second
	}
	if c.Unpooled == nil {
		c.Unpooled = []string{"/healthz", "/readyz", "/metrics"}
	}
	if err := c.Body.Validate(); err != nil {
		return err
	}
	if c.Logins == (LoginLimits{}) {
		c.Logins = DefaultLoginLimits()
	}
	if err := c.Logins.Validate(); err != nil {
		return err
	}
	return c.Pools.Validate()
}

// maxConcurrency bounds a pool's Concurrency: past it, a node has other
// problems than its pools.
const maxConcurrency = 100_000

// Validate fills the zero fields from DefaultPools and rejects nonsense
// (a refused setting is a *config.FieldError).
func (p *Pools) Validate() error {
	def := DefaultPools()
	for _, c := range []struct {
		name string
		cfg  *PoolConfig
		def  PoolConfig
	}{{"Upload", &p.Upload, def.Upload}, {"Receive", &p.Receive, def.Receive}, {"Web", &p.Web, def.Web}} {
		if c.cfg.Concurrency < 0 || c.cfg.Concurrency > maxConcurrency {
			return config.Invalid("gitfront", c.name+".Concurrency", c.cfg.Concurrency, fmt.Sprintf("0 (the default) to %d", maxConcurrency))
		}
		*c.cfg = c.cfg.withDefaults(c.def)
	}
	return nil
}

// Front is the node's HTTP handler: it classifies each request into a
// pool, authenticates it inside the pool, and routes /scm/ to git and the
// rest to the web handler. Safe for concurrent use.
type Front struct {
	cfg     Config
	pools   [numPools]*Pool
	git     *GitHandler
	gitAuth http.Handler // authenticated git handler; nil without git
	webAuth http.Handler // authenticated web handler
	track   tracker
	logins  *LoginGuard // nil: failed logins are not bounded

	slowBodies atomic.Uint64
}

// New builds a Front. Errors: ErrConfig, or NewGitHandler's.
func New(cfg Config) (*Front, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f := &Front{cfg: cfg}
	for name, pc := range map[PoolName]PoolConfig{PoolUpload: cfg.Pools.Upload, PoolReceive: cfg.Pools.Receive, PoolWeb: cfg.Pools.Web} {
		p, err := NewPool(name, pc)
		if err != nil {
			return nil, err
		}
		f.pools[name] = p
	}
	switch {
	case cfg.NoLoginLimits:
	case cfg.LoginGuard != nil:
		f.logins = cfg.LoginGuard
	default:
		f.logins = NewLoginGuard(cfg.Logins, cfg.Logger, nil)
	}
	auth := AuthenticateGuarded(cfg.Authenticator, cfg.Logger, f.logins)
	f.webAuth = auth(cfg.Web)
	if cfg.Git.ReposDir != "" {
		g, err := NewGitHandler(cfg.Git)
		if err != nil {
			return nil, err
		}
		f.git, f.gitAuth = g, auth(g)
	}
	return f, nil
}

// Git is the git handler, nil when git is off.
func (f *Front) Git() *GitHandler { return f.git }

// ServeHTTP classifies r and serves it within its pool, or answers 503
// with Retry-After when the pool is full, its queue wait times out, or
// the front is draining.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, scmPrefix) && !cleanPath(r.URL.EscapedPath()) {
		// net/http's ServeMux would answer a redirect to the cleaned
		// path, which moves a POST or PUT to another resource.
		writeError(w, r, http.StatusBadRequest, "the path has empty, \".\" or \"..\" segments")
		return
	}
	if f.unpooled(r.URL.Path) {
		f.cfg.Web.ServeHTTP(w, r)
		return
	}
	if !f.admitBody(w, r) {
		return
	}
	pool := f.pools[Classify(r)]
	if !f.track.enter(isContinuation(r)) {
		f.refuse(w, r, pool, ErrDraining)
		return
	}
	defer f.track.leave()
	h := f.route(r)
	if err := pool.Do(r.Context(), func() { h.ServeHTTP(w, r) }); err != nil {
		f.refuse(w, r, pool, err)
	}
}

// cleanPath reports whether an absolute path has no empty, "." or ".."
// segment (a trailing slash is allowed).
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return true // not for the front to judge (OPTIONS *, proxies)
	}
	c := path.Clean(p)
	if c != "/" && strings.HasSuffix(p, "/") {
		c += "/"
	}
	return c == p
}

// isContinuation reports whether r continues a git operation that an
// earlier request (the ref advertisement) started.
func isContinuation(r *http.Request) bool {
	p := r.URL.Path
	return r.Method == http.MethodPost && strings.HasPrefix(p, scmPrefix) &&
		(strings.HasSuffix(p, "/"+uploadPack) || strings.HasSuffix(p, "/"+receivePack))
}

func (f *Front) unpooled(path string) bool {
	for _, p := range f.cfg.Unpooled {
		if p == path {
			return true
		}
	}
	return false
}

// route picks the handler by path; the pool was picked by Classify.
func (f *Front) route(r *http.Request) http.Handler {
	if f.gitAuth != nil && strings.HasPrefix(r.URL.Path, scmPrefix) {
		return f.gitAuth
	}
	return f.webAuth
}

// refuse answers a request the pool did not admit.
func (f *Front) refuse(w http.ResponseWriter, r *http.Request, p *Pool, err error) {
	if r.Context().Err() != nil {
		return // the client is gone
	}
	setRetryAfter(w, p.cfg.RetryAfter)
	msg := fmt.Sprintf("the %s pool is busy; retry later", p.name)
	if errors.Is(err, ErrDraining) {
		w.Header().Set("Connection", "close")
		msg = "this node is draining; retry on another node"
	}
	writeError(w, r, http.StatusServiceUnavailable, msg)
}

// Stats is a snapshot of the front's counters.
type Stats struct {
	Pools    []PoolStats // upload, receive, web
	Git      GitStats
	Draining bool
	// SlowBodies counts requests refused (408) because their body did
	// not arrive at the minimum rate before the pool.
	SlowBodies uint64
	// Logins counts failed logins and those refused for them (429).
	Logins LoginStats
}

// Stats returns the front's counters.
func (f *Front) Stats() Stats {
	s := Stats{Draining: f.track.isDraining(), SlowBodies: f.slowBodies.Load()}
	for _, n := range []PoolName{PoolUpload, PoolReceive, PoolWeb} {
		s.Pools = append(s.Pools, f.pools[n].Stats())
	}
	if f.git != nil {
		s.Git = f.git.Stats()
	}
	if f.logins != nil {
		s.Logins = f.logins.Stats()
	}
	return s
}

// Logins is the guard of failed logins, nil when they are not bounded.
func (f *Front) Logins() *LoginGuard { return f.logins }

// Pool returns the named pool.
func (f *Front) Pool(name PoolName) *Pool { return f.pools[name] }

// Drain turns the front away from new work and waits for the work in
// flight. From the call on, ReadyHandler answers 503 and new pooled
// requests get 503 with Retry-After and Connection: close, except the
// POSTs that continue a git operation (upload-pack, receive-pack), since
// the client already had its ref advertisement from this node: a clone or
// push in flight completes. Drain returns once no pooled request has run
// for DrainQuiet (a git client sends its POST right after the
// advertisement), or with ctx.Err() when ctx ends first. Unpooled paths
// keep answering. Safe to call more than once and concurrently.
func (f *Front) Drain(ctx context.Context) error {
	if err := f.track.drain(ctx, f.cfg.DrainQuiet); err != nil {
		return fmt.Errorf("gitfront: drain: %d requests still running: %w", f.track.count(), err)
	}
	return nil
}

// Draining reports whether Drain was called.
func (f *Front) Draining() bool { return f.track.isDraining() }

// ReadyHandler answers /readyz: 503 while draining or when check (if
// set) fails, 200 otherwise, with a JSON status. check runs under the
// request's context and should be quick.
func (f *Front) ReadyHandler(check func(context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		if f.track.isDraining() {
			err = ErrDraining
		} else if check != nil {
			err = check(r.Context())
		}
		if err != nil {
			writeStatus(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		writeStatus(w, http.StatusOK, "ready", "")
	})
}

func writeStatus(w http.ResponseWriter, code int, status, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(code)
	if reason == "" {
		fmt.Fprintf(w, "{\"status\":%q}\n", status)
		return
	}
	fmt.Fprintf(w, "{\"status\":%q,\"reason\":%q}\n", status, reason)
}
