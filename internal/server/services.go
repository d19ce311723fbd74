package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/packcache"
	"github.com/shoal-dev/shoal/scheduler"
)

// CacheConfig configures the node's L2 cache. The mode is the cluster
// configuration's CacheMode: every member must agree on it.
type CacheConfig struct {
	// Invalidation is l2cache.InvalidationAsync (default) or
	// l2cache.InvalidationSync (--invalidation).
	Invalidation string
	// Backups is the number of synchronous backups of each DISTRIBUTED
	// partition, 0 to 2 (--backups); nil means 1.
	Backups *int
	// Partitions is the DISTRIBUTED partition count (default 271).
	Partitions int
	// MaxCost bounds the cached bytes on this node (default 64 MiB).
	MaxCost int64
	// TTL, if set, expires cached entries (--cache-ttl).
	TTL time.Duration
	// Lease is the read lease (--cache-lease, default 2 s): how long a
	// node may serve cached state after it last confirmed, through the
	// consistent store, that no write excluded it; what a member that
	// stops answering adds to a write, at most.
	Lease time.Duration
}

// PackConfig configures the node's pack cache.
type PackConfig struct {
	// Off sends every upload-pack straight to git (--pack-cache=false).
	Off bool
	// Dir is the node's own cache directory (default DataDir/packcache).
	Dir string
	// MaxBytes and MinFree are the disk budget and the free-space floor
	// (--pack-cache-max-bytes, --pack-cache-min-free).
	MaxBytes int64
	MinFree  uint64
	// TTL is how long an entry may be served (default 24 h).
	TTL time.Duration
	// AdvertCache caches ref advertisements per repository generation
	// (off by default, as in Bitbucket).
	AdvertCache bool
}

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
	db        *domain.Store
	packs     *packcache.Cache
	gens      *packcache.StoreGenerations
	front     *gitfront.Front
	unsubPack func()
	sched     *scheduler.Scheduler

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
	if s.svc.db, err = domain.Open(ctx, domain.Config{URL: cfg.DBURL, ConnMaxLifetime: cfg.DBConnMaxLifetime, Logger: cfg.Logger}); err != nil {
		return nil, fmt.Errorf("database %s: %w", cfg.DBURL, err)
	}
	if err := os.MkdirAll(cfg.ReposDir, 0o755); err != nil {
		return nil, fmt.Errorf("repositories directory: %w", err)
	}
	if err := s.startPacks(); err != nil {
		return nil, err
	}
	if err := s.startScheduler(); err != nil {
		return nil, err
	}
	jobRoutes(mux, s.svc.sched)
	mux.HandleFunc("GET "+rest.Prefix+"/admin/cluster-stats", s.handleClusterStats)
	api, err := rest.New(rest.Config{DB: s.svc.db, Cache: s.svc.cache, Logger: cfg.Logger,
		Principal: func(r *http.Request) (int64, bool) {
			p, ok := gitfront.PrincipalFrom(r.Context())
			return p.UserID, ok
		},
		OnRepositoryCreated: func(ctx context.Context, project, slug string) error {
			return gitfront.InitBare(ctx, cfg.ReposDir, project, slug)
		}})
	if err != nil {
		return nil, err
	}
	mux.Handle(rest.Prefix+"/", api)
	mux.Handle("GET /metrics", s.metricsHandler())
	git := gitfront.GitConfig{ReposDir: cfg.ReposDir, Authorizer: gitfront.AuthorizerFunc(s.authorize), OnPush: s.onPush, Logger: cfg.Logger}
	if s.svc.packs != nil {
		git.UploadPacker = gitfront.UploadPackerFunc(s.serveUploadPack)
		git.PushGuard = gitfront.PushGuardFunc(s.beginPush)
		if cfg.Packs.AdvertCache {
			git.AdvertGenerations = s.svc.gens
		}
	}
	s.svc.front, err = gitfront.New(gitfront.Config{Web: mux, Git: git, Pools: cfg.Pools, Logger: cfg.Logger,
		Authenticator: gitfront.AuthenticatorFuncs{Basic: s.verifyBasic, Bearer: s.verifyBearer}})
	if err != nil {
		return nil, err
	}
	mux.Handle("GET /readyz", s.svc.front.ReadyHandler(s.ready))
	return s.svc.front, nil
}

// startCache starts the partition table keeper (DISTRIBUTED) and the L2
// cache.
func (s *Server) startCache() error {
	cc := s.cfg.Cache
	lc := l2cache.Config{Mode: s.cfg.Cluster.CacheMode, Bus: s.node.Bus(), Node: s.node,
		MaxCost: cc.MaxCost, TTL: cc.TTL, Invalidation: cc.Invalidation, Logger: s.cfg.Logger}
	if lc.Mode != cluster.CacheModeLocal {
		backups := 1
		if cc.Backups != nil {
			backups = *cc.Backups
		}
		if backups == 0 {
			backups = -1 // TableConfig: negative means none, zero the default
		}
		s.svc.keeper = l2cache.NewTableKeeper(l2cache.TableConfig{Node: s.node, Store: s.store,
			Partitions: cc.Partitions, Backups: backups, Logger: s.cfg.Logger})
		lc.Keeper = s.svc.keeper
	}
	var err error
	s.svc.lease, err = l2cache.NewReadLease(l2cache.LeaseConfig{Name: s.node.Name(), Store: s.store, Duration: cc.Lease, Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	lc.Lease = s.svc.lease
	s.svc.cache, err = l2cache.New(lc)
	return err
}

// startPacks opens the pack cache in the node's own directory, its
// generations in the consistent store, and listens for other nodes' pushes.
func (s *Server) startPacks() error {
	pc := s.cfg.Packs
	if pc.Off {
		return nil
	}
	if pc.Dir == "" {
		pc.Dir = filepath.Join(s.cfg.DataDir, "packcache")
	}
	if err := os.MkdirAll(pc.Dir, 0o755); err != nil {
		return fmt.Errorf("pack cache directory: %w", err)
	}
	c := packcache.DefaultConfig(pc.Dir)
	if pc.MaxBytes > 0 {
		c.MaxBytes = pc.MaxBytes
	}
	c.MinFree = pc.MinFree
	if pc.TTL > 0 {
		c.TTL = pc.TTL
	}
	gens, err := packcache.NewStoreGenerations(packcache.StoreGenerationsConfig{
		Store: cpStore{s.store}, Node: s.node.Name(), Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	s.svc.gens = gens
	c.Generations, c.Logger = gens, s.cfg.Logger
	c.Announce = func(repo string) error { return s.node.Bus().Publish(packTopic, []byte(repo)) }
	c.LsRefs = pc.AdvertCache // v2's ref advertisement, like info/refs for v0
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
	if err := s.recordPush(ctx, project, repo); err != nil {
		s.cfg.Logger.Warn("recording a push failed", "repo", gitfront.RepoName(project, repo), "err", err)
	}
}

// recordPush marks the repository modified in the database and drops its
// cached row on every node, and gives the OPEN pull requests whose source
// branch moved a new version, through the L2 cache.
func (s *Server) recordPush(ctx context.Context, project, repo string) error {
	r, err := s.svc.db.Repository(ctx, project, repo)
	if err != nil {
		return err
	}
	if err := s.svc.db.TouchRepository(ctx, r.ID); err != nil {
		return err
	}
	return errors.Join(rest.EvictRepository(ctx, s.svc.cache, r), s.recordMovedBranches(ctx, r, gitfront.RefUpdates(ctx)))
}

// recordMovedBranches bumps the OPEN pull requests from the branches the
// push moved: those it asked to update (not delete) that now point where
// it asked.
func (s *Server) recordMovedBranches(ctx context.Context, r domain.Repository, updates []gitfront.RefUpdate) error {
	asked := map[string]string{} // branch → new object ID
	var branches []string
	for _, u := range updates {
		if b, ok := strings.CutPrefix(u.Ref, "refs/heads/"); ok && !u.Deleted() && u.Old != u.New {
			asked[b] = u.New
			branches = append(branches, b)
		}
	}
	ids, err := s.svc.db.OpenPullRequestsFrom(ctx, r.ID, branches)
	if err != nil || len(ids) == 0 {
		return err
	}
	moved, err := s.branchesAt(ctx, r, asked)
	if err != nil {
		return err
	}
	var bump []int64
	for _, id := range ids {
		pr, err := s.svc.db.PullRequest(ctx, id)
		if err != nil {
			return err
		}
		if moved[pr.FromBranch] {
			bump = append(bump, id)
		}
	}
	if len(bump) == 0 {
		return nil
	}
	return rest.ChangePullRequests(ctx, s.svc.cache, bump, func(ctx context.Context) error {
		_, err := s.svc.db.SourceMoved(ctx, bump)
		return err
	})
}

// branchesAt reports which of the branches now point at the object the
// push asked for (git may have refused some updates).
func (s *Server) branchesAt(ctx context.Context, r domain.Repository, want map[string]string) (map[string]bool, error) {
	args := []string{"for-each-ref", "--format=%(objectname) %(refname)"}
	for b := range want {
		args = append(args, "refs/heads/"+b)
	}
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = filepath.Join(s.cfg.ReposDir, r.ProjectKey, r.Slug+".git")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("reading the pushed branches of %s/%s: %w", r.ProjectKey, r.Slug, err)
	}
	moved := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		id, ref, _ := strings.Cut(strings.TrimSpace(line), " ")
		if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok && want[b] == id {
			moved[b] = true
		}
	}
	return moved, nil
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
