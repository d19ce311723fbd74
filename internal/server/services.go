package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/cluster/cp/cphttp"
	"github.com/shoal-dev/shoal/dmap"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/internal/ui"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/packcache"
	"github.com/shoal-dev/shoal/resp"
	"github.com/shoal-dev/shoal/scheduler"
)

// packTopic is the bus topic of pack cache invalidations: a pushed
// repository's name.
const packTopic = "packcache"

// services are the parts a node serves above the cluster: the L2 cache,
// the database, the pack cache and the HTTP front. They are started after
// the cluster member and the store, and stopped before them.
type services struct {
	keeper    *l2cache.TableKeeper
	lease     *l2cache.ReadLease
	cache     *l2cache.Cache
	modes     *l2cache.ModeKeeper
	db        *domain.Store
	packs     *packcache.Cache
	gens      *packcache.StoreGenerations
	front     *gitfront.Front
	logins    *gitfront.LoginGuard // failed logins, shared by the front and the dashboard
	unsubPack func()
	sched     *scheduler.Scheduler
	maps      *dmap.DMap
	resp      *resp.Server
	respOn    atomic.Pointer[resp.Server] // for the maps' invalidations
	ui        *ui.UI
	// stats are what /v1/stats, /metrics and the rollup read, filled as
	// the parts start (before the node serves).
	stats nodestats.Sources

	stopBuiltins context.CancelFunc // ends scheduleBuiltins
	builtins     sync.WaitGroup
}

// startServices starts the L2 cache, opens the database, the pack cache
// and the front, and returns the root HTTP handler.
func (s *Server) startServices(ctx context.Context, mux *http.ServeMux) (http.Handler, error) {
	cfg := &s.cfg
	if err := s.startCache(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	dc := cfg.DB
	dc.Logger = cfg.Logger
	if s.svc.db, err = domain.Open(ctx, dc); err != nil {
		return nil, fmt.Errorf("database %s: %w", dc.URL, err)
	}
	if err := os.MkdirAll(cfg.Git.ReposDir, 0o700); err != nil {
		return nil, fmt.Errorf("repositories directory: %w", err)
	}
	s.sweepQuarantines(ctx)
	if err := s.startPacks(); err != nil {
		return nil, err
	}
	if err := s.startMaps(); err != nil {
		return nil, err
	}
	s.svc.stats = nodestats.Sources{Node: s.node, Cache: s.svc.cache, Keeper: s.svc.keeper, Lease: s.svc.lease, Packs: s.svc.packs,
		Maps: s.svc.maps, RESP: s.svc.resp,
		TLS: s.tls}
	if err := s.startScheduler(); err != nil {
		return nil, err
	}
	jobs := cphttp.RequireAdmin(caller, scheduler.Handler(s.svc.sched).ServeHTTP)
	mux.Handle("/v1/jobs", jobs)
	mux.Handle("/v1/jobs/", jobs)
	nodestats.ServeRPC(&s.svc.stats)
	mux.Handle("GET "+rest.Prefix+"/admin/cluster-stats", nodestats.ClusterStatsHandler(s.store, caller))
	api, err := rest.New(rest.Config{DB: s.svc.db, Cache: s.svc.cache, Logger: cfg.Logger, MaxBodyBytes: restMaxBody,
		Principal: func(r *http.Request) (int64, bool) {
			p, ok := gitfront.PrincipalFrom(r.Context())
			return p.UserID, ok
		},
		OnRepositoryCreated: func(ctx context.Context, project, slug, branch string) error {
			err := gitfront.InitBareBranch(ctx, cfg.Git.ReposDir, project, slug, branch)
			if errors.Is(err, gitfront.ErrExists) {
				// The row was committed just now and no other row has
				// this slug, so the directory is this row's: a git
				// request created it first (healRepo, had this hook run
				// over healAfter late), or it outlived an earlier row of
				// the slug. Undoing the row would orphan the directory
				// and make the slug uncreatable for good; adopt it.
				cfg.Logger.Warn("the new repository's git directory was already there; adopting it", "repo", gitfront.RepoName(project, slug))
				return nil
			}
			return err
		}})
	if err != nil {
		return nil, err
	}
	mux.Handle(rest.Prefix+"/", api)
	s.svc.logins = gitfront.NewLoginGuard(cfg.HTTP.Logins, cfg.Logger, nil)
	metrics := nodestats.MetricsHandler(&s.svc.stats)
	if cfg.HTTP.MetricsAuth {
		// /metrics is served outside the pools, so outside the front's
		// authentication: it authenticates here.
		metrics = gitfront.AuthenticateGuarded(s.authenticator(), cfg.Logger, s.svc.logins)(requireUser(metrics.ServeHTTP))
	}
	mux.Handle("GET /metrics", metrics)
	if err := s.startUI(mux); err != nil {
		return nil, err
	}
	git := cfg.Git
	git.Authorizer, git.OnPush, git.Logger = gitfront.AuthorizerFunc(s.authorize), s.onPush, cfg.Logger
	if s.svc.packs != nil {
		git.UploadPacker = gitfront.UploadPackerFunc(s.serveUploadPack)
		git.PushGuard = gitfront.PushGuardFunc(s.beginPush)
		if cfg.RefAdvertCache {
			git.AdvertGenerations = s.svc.gens
		}
	}
	s.svc.front, err = gitfront.New(gitfront.Config{Web: mux, Git: git, Pools: cfg.Pools, Logger: cfg.Logger,
		Body: cfg.HTTP.Body, BodyLimit: webBodyLimit, Unpooled: unpooled, LoginGuard: s.svc.logins,
		Authenticator: s.authenticator()})
	if err != nil {
		return nil, err
	}
	mux.Handle("GET /readyz", s.svc.front.ReadyHandler(s.ready))
	s.svc.stats.Front = s.svc.front
	s.svc.ui.Start()
	return s.svc.front, nil
}

// startCache starts the partition table keeper, the read lease, the L2
// cache and the keeper of the cluster's cache mode. The table is kept
// whatever the mode: the cluster may switch to DISTRIBUTED or NEAR at any
// time.
func (s *Server) startCache() error {
	cfg := &s.cfg
	lc := cfg.Cache
	lc.Mode, lc.Bus, lc.Node, lc.Logger = cfg.Cluster.CacheMode, s.node.Bus(), s.node, cfg.Logger
	var err error
	tc := cfg.Table
	tc.Node, tc.Store, tc.Logger = s.node, s.store, cfg.Logger
	if s.svc.keeper, err = l2cache.NewTableKeeper(tc); err != nil {
		return err
	}
	lc.Keeper = s.svc.keeper
	ls := cfg.Lease
	ls.Name, ls.Store, ls.Logger = s.node.Name(), s.store, cfg.Logger
	if s.svc.lease, err = l2cache.NewReadLease(ls); err != nil {
		return err
	}
	lc.Lease = s.svc.lease
	if s.svc.cache, err = l2cache.New(lc); err != nil {
		return err
	}
	s.svc.modes, err = l2cache.NewModeKeeper(l2cache.ModeConfig{Name: s.node.Name(), Store: s.store,
		Cache: s.svc.cache, Lease: s.svc.lease, Initial: lc.Mode, Logger: cfg.Logger})
	return err
}

// startMaps starts the node's part of the named maps on the partition
// table (every node holds its share, whatever the cache mode and whether
// or not it serves RESP), and the RESP endpoint when it is on.
func (s *Server) startMaps() error {
	cfg := &s.cfg
	mc := cfg.Maps
	mc.Node, mc.Keeper, mc.Lease, mc.Partitions, mc.Logger = s.node, s.svc.keeper, s.svc.lease, cfg.Table.Partitions, cfg.Logger
	mc.OnInvalidate = func(p int, keys []string) {
		if r := s.svc.respOn.Load(); r != nil {
			r.Invalidate(p, keys)
		}
	}
	var err error
	if s.svc.maps, err = dmap.New(mc); err != nil {
		return err
	}
	if s.respLn == nil {
		return nil
	}
	rc := cfg.RESP
	rc.Listener, rc.Map, rc.Node, rc.Version, rc.Logger = s.respLn, s.svc.maps, s.node, Version, cfg.Logger
	rc.Auth = respAuth{s}
	if s.svc.resp, err = resp.Start(rc); err != nil {
		return err
	}
	s.svc.respOn.Store(s.svc.resp)
	return nil
}

// respAuth checks RESP credentials against the domain's users.
type respAuth struct{ s *Server }

func (a respAuth) Password(ctx context.Context, user, password string) (resp.Principal, error) {
	return respPrincipal(a.s.svc.db.VerifyPassword(ctx, user, password))
}

func (a respAuth) Token(ctx context.Context, token string) (resp.Principal, error) {
	return respPrincipal(a.s.svc.db.VerifyToken(ctx, token))
}

func respPrincipal(u domain.User, err error) (resp.Principal, error) {
	switch {
	case errors.Is(err, domain.ErrBadCredentials):
		return resp.Principal{}, resp.ErrBadCredentials
	case errors.Is(err, domain.ErrBusy):
		return resp.Principal{}, resp.ErrAuthBusy
	case err != nil:
		return resp.Principal{}, err
	}
	return resp.Principal{Name: u.Name, Admin: u.Admin}, nil
}

// startPacks opens the pack cache in the node's own directory, its
// generations in the consistent store, and listens for other nodes' pushes.
func (s *Server) startPacks() error {
	cfg := &s.cfg
	if !cfg.PackCache {
		return nil
	}
	c := cfg.Packs
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("pack cache directory: %w", err)
	}
	gc := cfg.Pushes
	gc.Store, gc.Node, gc.Logger = cpStore{s.store}, s.node.Name(), cfg.Logger
	gens, err := packcache.NewStoreGenerations(gc)
	if err != nil {
		return err
	}
	s.svc.gens = gens
	c.Generations, c.Logger = gens, cfg.Logger
	c.Announce = func(repo string) error { return s.node.Bus().Publish(packTopic, []byte(repo)) }
	c.LsRefs = cfg.RefAdvertCache // v2's ref advertisement, like info/refs for v0
	if s.svc.packs, err = packcache.New(c); err != nil {
		return err
	}
	packs := s.svc.packs
	s.svc.unsubPack = s.node.Bus().Subscribe(packTopic, cluster.SubscriberFuncs{
		OnMessage: func(m cluster.Message) { packs.Forget(string(m.Payload)) },
		// A missed message is harmless: the pushed repository's
		// generation, part of every key, changed in the store.
	})
	return nil
}

// closeServices stops what startServices started, in reverse. The front
// has already drained.
func (s *Server) closeServices() error {
	v := &s.svc
	var errs []error
	if v.ui != nil {
		v.ui.Close()
	}
	if v.resp != nil {
		v.respOn.Store(nil)
		errs = append(errs, v.resp.Close())
	} else if s.respLn != nil {
		s.respLn.Close()
	}
	if v.maps != nil {
		v.maps.Close()
	}
	if v.stopBuiltins != nil {
		v.stopBuiltins()
		v.builtins.Wait()
	}
	if v.sched != nil {
		errs = append(errs, v.sched.Close())
	}
	if v.unsubPack != nil {
		v.unsubPack()
	}
	if v.packs != nil {
		errs = append(errs, v.packs.Close())
	}
	if v.modes != nil {
		v.modes.Close()
	}
	if v.lease != nil {
		v.lease.Close() // resign first: writers stop waiting for this node
	}
	if v.cache != nil {
		v.cache.Close()
	}
	if v.keeper != nil {
		v.keeper.Close()
	}
	if v.db != nil {
		errs = append(errs, v.db.Close())
	}
	return errors.Join(errs...)
}

// ready is /readyz's check (the front adds "not draining"): the node is
// in a raft group with a leader, its cache can serve (in DISTRIBUTED
// mode, it has a partition table that includes it), and the database
// answers.
func (s *Server) ready(ctx context.Context) error {
	if st := s.store.Status(); st.Leader == "" {
		return errors.New("no raft leader known yet")
	}
	if err := s.svc.cache.Ready(); err != nil {
		return err
	}
	if err := s.svc.db.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	return nil
}

// authenticator checks credentials against the domain's users and tokens.
func (s *Server) authenticator() gitfront.Authenticator {
	return gitfront.AuthenticatorFuncs{Basic: s.verifyBasic, Bearer: s.verifyBearer}
}

func (s *Server) verifyBasic(ctx context.Context, user, secret string) (gitfront.Principal, error) {
	return principalOf(s.svc.db.VerifyPassword(ctx, user, secret))
}

func (s *Server) verifyBearer(ctx context.Context, token string) (gitfront.Principal, error) {
	return principalOf(s.svc.db.VerifyToken(ctx, token))
}

func principalOf(u domain.User, err error) (gitfront.Principal, error) {
	switch {
	case errors.Is(err, domain.ErrBadCredentials):
		return gitfront.Principal{}, gitfront.ErrBadCredentials
	case errors.Is(err, domain.ErrBusy):
		return gitfront.Principal{}, gitfront.ErrAuthBusy
	case err != nil:
		return gitfront.Principal{}, err // the front answers 503
	}
	return gitfront.Principal{UserID: u.ID, Name: u.Name, Admin: u.Admin}, nil
}

// authorize is the default policy: the domain's project and repository
// permissions, public repositories readable by anyone. A caller who may
// not read a repository is told it does not exist.
func (s *Server) authorize(ctx context.Context, p gitfront.Principal, project, repo string, a gitfront.Action) error {
	perm, err := s.svc.db.Permission(ctx, p.UserID, project, repo)
	switch {
	case errors.Is(err, domain.ErrNotFound), err == nil && perm == domain.PermNone:
		return gitfront.ErrNotFound
	case err != nil:
		return err
	case perm < domain.Perm(a):
		return gitfront.ErrForbidden
	}
	return s.healRepo(ctx, project, repo)
}

// healAfter is how old a repository's row must be before a git request
// that finds no git directory for it creates one (healRepo): older than
// any creation still on its way from its commit to its hook, which runs
// right after the commit, bounded by the REST API's 30 s write timeout.
const healAfter = time.Minute

// healRepo creates the bare repository of a row that has none. A
// creation commits its row and then creates the directory (the REST
// API's OnRepositoryCreated); a node killed in between, or a commit whose
// answer was lost (the API cannot tell it committed, so runs no hook),
// leaves a row that every git request would answer 404 and that the slug
// can never be created again over. Past healAfter no hook will come, so
// the first authorized git request creates the directory, with the
// default branch main (the one asked for at creation is not stored). A
// row younger than that is left to its hook: the request is answered 404
// as it would have been a moment before the row existed. One Lstat per
// authorized request when the directory is there.
func (s *Server) healRepo(ctx context.Context, project, repo string) error {
	if _, err := os.Lstat(filepath.Join(s.cfg.Git.ReposDir, project, repo+".git")); !errors.Is(err, fs.ErrNotExist) {
		return nil // there, or the front's own resolution reports the error
	}
	row, err := s.svc.db.Repository(ctx, project, repo)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return gitfront.ErrNotFound
	case err != nil:
		return err
	case time.Since(time.UnixMilli(row.Created)) < healAfter:
		return nil // its hook may still come; the front answers 404
	}
	err = gitfront.InitBare(ctx, s.cfg.Git.ReposDir, project, repo)
	switch {
	case err == nil:
		s.cfg.Logger.Warn("a repository's row had no git directory; created it", "repo", gitfront.RepoName(project, repo),
			"created", time.UnixMilli(row.Created).UTC())
	case errors.Is(err, gitfront.ErrExists):
		// Another request healed it first.
	default:
		return fmt.Errorf("creating the missing git directory of %s: %w", gitfront.RepoName(project, repo), err)
	}
	return nil
}

func (s *Server) serveUploadPack(ctx context.Context, w io.Writer, repo, dir, proto string, body io.Reader) error {
	_, err := s.svc.packs.ServeUploadPack(ctx, w, repo, dir, proto, body)
	if errors.Is(err, packcache.ErrMalformed) {
		err = fmt.Errorf("%w: %w", gitfront.ErrMalformed, err)
	}
	return err
}

// beginPush is the front's PushGuard: the pack cache records the push
// in the store before git may move a ref (see packcache's doc).
func (s *Server) beginPush(ctx context.Context, repo string) (gitfront.PushTicket, error) {
	p, err := s.svc.packs.BeginPush(ctx, repo)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// onPush runs after a receive-pack (the caches were dealt with by the
// push guard): it records the push in the domain.
func (s *Server) onPush(ctx context.Context, project, repo string) {
	dir := filepath.Join(s.cfg.Git.ReposDir, project, repo+".git")
	err := rest.RecordPush(ctx, s.svc.db, s.svc.cache, rest.Push{Project: project, Repo: repo,
		Branches: gitfront.PushedBranches(gitfront.RefUpdates(ctx)),
		BranchesAt: func(ctx context.Context, want map[string]string) (map[string]bool, error) {
			return gitfront.BranchesAt(ctx, dir, want)
		}})
	if err != nil {
		s.cfg.Logger.Warn("recording a push failed", "repo", gitfront.RepoName(project, repo), "err", err)
	}
}

// cpStore is the consistent store as the pack cache's Store.
type cpStore struct{ st *cp.Store }

func (c cpStore) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	kv, err := c.st.Get(ctx, key)
	if errors.Is(err, cp.ErrNotFound) {
		return nil, 0, nil
	}
	return kv.Value, kv.Version, err
}

func (c cpStore) CompareAndSet(ctx context.Context, key string, expect uint64, value []byte) (uint64, error) {
	v, err := c.st.CompareAndSet(ctx, key, expect, value)
	if errors.Is(err, cp.ErrVersionMismatch) {
		return 0, fmt.Errorf("%w: %w", packcache.ErrConflict, err)
	}
	return v, err
}

// sweepQuarantines removes the push quarantines that pushes killed with
// their node left in the shared repositories, once they are older than
// Git.QuarantineAge (gitfront.SweepAllQuarantines). A failure is logged:
// the node serves without it.
func (s *Server) sweepQuarantines(ctx context.Context) {
	age := s.cfg.Git.QuarantineAge
	if age <= 0 {
		age = time.Hour // gitfront's default
	}
	n, err := gitfront.SweepAllQuarantines(ctx, s.cfg.Git.ReposDir, age)
	if n > 0 {
		s.cfg.Logger.Info("removed stale push quarantines", "count", n, "repos_dir", s.cfg.Git.ReposDir, "older_than", age)
	}
	if err != nil {
		s.cfg.Logger.Warn("sweeping push quarantines", "repos_dir", s.cfg.Git.ReposDir, "err", err)
	}
}

// unpooled are the paths the front serves outside its pools: the health
// checks and metrics, which must answer under any load, and the
// dashboard's event streams, which last as long as a browser shows a page
// (in a pool each would hold a slot, and a drain would wait for it). None
// takes the front's authentication: the streams check their session.
var unpooled = []string{"/healthz", "/readyz", "/metrics", ui.EventsPath}

// startUI starts the dashboard and mounts it at /ui/.
func (s *Server) startUI(mux *http.ServeMux) error {
	var err error
	s.svc.ui, err = ui.New(ui.Config{Node: s.node, Store: s.store, Stats: &s.svc.stats, Scheduler: s.svc.sched,
		Authenticate: s.verifyBasic, Logins: s.svc.logins, Version: Version, Logger: s.cfg.Logger,
		PeerStats: func(ctx context.Context, m cluster.Member) (nodestats.Stats, error) {
			return nodestats.ReadMember(ctx, &s.svc.stats, m)
		},
		Interval: s.cfg.UI.Interval, Window: s.cfg.UI.Window})
	if err != nil {
		return err
	}
	s.svc.ui.Mount(mux)
	return nil
}

// restMaxBody bounds REST request bodies.
const restMaxBody = 1 << 20

// webBodyLimit is the largest body a web route takes, for the front to
// refuse a longer announced one (413) before reading any of it; 0 for a
// route whose handler sets its own bound.
func webBodyLimit(r *http.Request) int64 {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v1/kv/"):
		return cphttp.MaxKVBody
	case p == "/v1/snapshot":
		return cphttp.MaxSnapshotBody
	case strings.HasPrefix(p, rest.Prefix+"/"):
		return restMaxBody
	case strings.HasPrefix(p, "/v1/"):
		return 1 << 20
	}
	return 0
}
