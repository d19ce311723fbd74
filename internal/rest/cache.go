package rest

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/l2cache"
)

// Region names, as the cache's Stats and /metrics show them.
const (
	RegionProjects     = "domain.Project"
	RegionRepositories = "domain.Repository"
	RegionPullRequests = "domain.PullRequest"
	RegionUsers        = "domain.User"
	RegionRepoPRs      = "domain.Repository.pullRequests"
	RegionQueries      = "rest.queries"
)

// Query spaces: the tables list queries read, bumped by the writes to them.
const (
	spaceProjects     = "projects"
	spaceRepositories = "repositories"
	spacePullRequests = "pull_requests"
	spaceComments     = "comments"
)

// A list of a table's rows that belong to one parent (a pull request's
// comments, a repository's pull requests, a project's repositories) also
// depends on one of the table's spaceBuckets bucket spaces, the parent's
// ({table/n}): a write that knows the parent bumps only that bucket, so
// that a comment added to one pull request drops the comment lists of a
// 1024th of the pull requests, not all of them; a write that does not
// know it bumps the whole table, which every list depends on too.
// Buckets, not one space per parent, keep the number of spaces (and the
// cache's bookkeeping per space: a stamp on every node) bounded.
//
// 1024, not the 64 of builds before 2026-12-04: with 64, the coupling
// benchmark's 2,000 pull requests shared a bucket 31 to 32 at a time, so a
// comment on a popular one dropped the comment lists of 30 others; 1024
// cut the query misses per operation by 16 % (LOCAL) to 28 % (NEAR)
// (BENCHMARKS.md, "Finer bucket spaces").
//
// The count is part of the cluster's protocol, as a region's name is:
// every node must bucket a parent alike, or a write bumps a bucket the
// other nodes' lists do not depend on. A cluster must not mix builds of
// different counts; upgrade across this change by stopping every node.
//
// A bucket space is keyed ("{comments/17}": l2cache.KeyedSpace), and a
// list's cache key begins with its bucket's space as its hash tag
// (bucketed.queryKey): in DISTRIBUTED and NEAR mode every list of a
// bucket lives at the bucket's owner, and a bucket's update goes there
// and to the nodes that read one of its lists, not to every node. Keyed
// names are part of the protocol too (builds before 2026-12-04 named
// them table/n, and hashed lists by their keys).
const spaceBuckets = 1024

// bucketed is a table's bucket spaces, and the pair (the table's space
// and the bucket's) a list of one bucket depends on.
type bucketed struct {
	buckets [spaceBuckets]string
	lists   [spaceBuckets][]string
}

func newBucketed(table string) *bucketed {
	b := &bucketed{}
	for i := range b.buckets {
		b.buckets[i] = l2cache.KeyedSpace(table + "/" + strconv.Itoa(i))
		b.lists[i] = []string{table, b.buckets[i]}
	}
	return b
}

// queryKey is the cache key of a list of bucket i: the bucket's space
// (its hash tag: l2cache.KeyTag), then the list's own name.
func (b *bucketed) queryKey(i int, format string, args ...any) string {
	return b.buckets[i] + fmt.Sprintf(format, args...)
}

var (
	commentSpaces = newBucketed(spaceComments)
	prSpaces      = newBucketed(spacePullRequests)
	repoSpaces    = newBucketed(spaceRepositories)
)

// idBucket and keyBucket are a parent's bucket, by ID or by key (32-bit
// FNV-1a, as hash/fnv computes it, without its allocations): the same on
// every node and in every build.
func idBucket(id int64) int { return int(uint64(id) % spaceBuckets) }

func keyBucket(key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return int(h % spaceBuckets)
}

// RegionNames lists the regions New creates.
func RegionNames() []string {
	return []string{RegionProjects, RegionRepositories, RegionPullRequests, RegionUsers, RegionRepoPRs, RegionQueries}
}

// regions are the API's cache regions; with no cache every field's region
// is nil and reads go to the database.
type regions struct {
	cache        *l2cache.Cache
	projects     entity[domain.Project]
	repositories entity[domain.Repository]
	pullRequests entity[domain.PullRequest]
	users        entity[domain.User]
	repoPRs      entity[[]int64]
	queries      *l2cache.Region
}

func newRegions(c *l2cache.Cache) (regions, error) {
	rg := regions{cache: c}
	if c == nil {
		return rg, nil
	}
	var errs []error
	region := func(name string, kind l2cache.RegionKind, access l2cache.AccessType) *l2cache.Region {
		r, err := c.Region(name, kind, access)
		errs = append(errs, err)
		return r
	}
	rg.projects.r = region(RegionProjects, l2cache.EntityRegion, l2cache.NonstrictReadWrite)
	rg.repositories.r = region(RegionRepositories, l2cache.EntityRegion, l2cache.NonstrictReadWrite)
	rg.pullRequests.r = region(RegionPullRequests, l2cache.EntityRegion, l2cache.ReadWrite)
	rg.users.r = region(RegionUsers, l2cache.EntityRegion, l2cache.NonstrictReadWrite)
	rg.repoPRs.r = region(RegionRepoPRs, l2cache.CollectionRegion, l2cache.NonstrictReadWrite)
	rg.queries = region(RegionQueries, l2cache.QueryRegion, l2cache.NonstrictReadWrite)
	if err := errors.Join(errs...); err != nil {
		return regions{}, fmt.Errorf("rest: %w", err)
	}
	return rg, nil
}

// entity is a typed view of an entity or collection region.
type entity[T any] struct{ r *l2cache.Region }

// cached returns key's value if this node holds it (a LOCAL hit; see
// l2cache.Typed.Cached): the accessors below ask it first, so that a hit
// builds neither a loader closure nor, for the keys built on the stack, a
// key string.
func (e entity[T]) cached(key string) (T, bool) {
	if e.r == nil {
		var zero T
		return zero, false
	}
	return l2cache.Typed[T]{R: e.r}.Cached(key)
}

// get returns the cached value of key or loads it (straight from load
// when there is no cache).
func (e entity[T]) get(ctx context.Context, key string, load func(context.Context) (T, error)) (T, error) {
	if e.r == nil {
		return load(ctx)
	}
	return l2cache.Typed[T]{R: e.r}.Get(ctx, key, load)
}

// lock soft-locks key before an update (read-write regions).
func (e entity[T]) lock(ctx context.Context, key string) error {
	if e.r == nil {
		return nil
	}
	return e.r.Lock(ctx, key)
}

// unlock releases the soft lock after the transaction, invalidating key,
// and marks spaces (the tables a committed transaction wrote) updated:
// in DISTRIBUTED and NEAR mode in the unlock's own messages where they
// reach (l2cache.Region.Unlock).
func (e entity[T]) unlock(ctx context.Context, key string, spaces ...string) error {
	if e.r == nil {
		return nil
	}
	return e.r.Unlock(ctx, key, spaces...)
}

// unlockWith is unlock after a committed update that wrote v: the cache
// keeps v where it can (l2cache.Region.UnlockWith).
func (e entity[T]) unlockWith(ctx context.Context, key string, v T, spaces ...string) error {
	if e.r == nil {
		return nil
	}
	return l2cache.Typed[T]{R: e.r}.Unlock(ctx, key, v, spaces...)
}

// evict invalidates key after a committed write, and marks spaces
// updated (as unlock).
func (e entity[T]) evict(ctx context.Context, key string, spaces ...string) error {
	if e.r == nil {
		return nil
	}
	return e.r.Evict(ctx, key, spaces...)
}

// idPage is a cached page of a list query: the IDs (or keys) of its rows
// and whether more follow.
type idPage[T any] struct {
	IDs  []T  `msgpack:"i"`
	More bool `msgpack:"m"`
}

// query returns a cached query result for key, guarded by spaces, or
// loads it.
func query[T any](ctx context.Context, rg regions, key string, spaces []string, load func(context.Context) (T, error)) (T, error) {
	if rg.queries == nil {
		return load(ctx)
	}
	return l2cache.Typed[T]{R: rg.queries}.GetQuery(ctx, key, spaces, load)
}

// updateSpaces marks tables as written (after the commit).
func (rg regions) updateSpaces(ctx context.Context, spaces ...string) error {
	if rg.cache == nil {
		return nil
	}
	return rg.cache.UpdateSpaces(ctx, spaces...)
}

func idKey(id int64) string { return strconv.FormatInt(id, 10) }

func repoKey(project, slug string) string { return project + "/" + slug }

// Cached loads of the entities. Each asks cached with a key that does not
// escape (built in a stack buffer: see keyBuf), and only on a miss builds
// the key string and the loader that get keeps.

// keyBuf is room for a key on the stack: a conversion of a byte slice to a
// string whose result does not escape is made in it when it fits (32
// bytes, the compiler's buffer), without an allocation.
type keyBuf [32]byte

func idKeyBytes(buf *keyBuf, id int64) []byte { return strconv.AppendInt(buf[:0], id, 10) }

func repoKeyBytes(buf *[64]byte, project, slug string) []byte {
	return append(append(append(buf[:0], project...), '/'), slug...)
}

func (a *api) project(ctx context.Context, key string) (domain.Project, error) {
	if v, ok := a.regions.projects.cached(key); ok {
		return v, nil
	}
	return a.regions.projects.get(ctx, key, func(ctx context.Context) (domain.Project, error) { return a.db.Project(ctx, key) })
}

func (a *api) repository(ctx context.Context, project, slug string) (domain.Repository, error) {
	var buf [64]byte // longer than keyBuf: a longer key costs one allocation, not two
	if v, ok := a.regions.repositories.cached(string(repoKeyBytes(&buf, project, slug))); ok {
		return v, nil
	}
	return a.regions.repositories.get(ctx, repoKey(project, slug), func(ctx context.Context) (domain.Repository, error) {
		return a.db.Repository(ctx, project, slug)
	})
}

func (a *api) pullRequest(ctx context.Context, id int64) (domain.PullRequest, error) {
	var buf keyBuf
	if v, ok := a.regions.pullRequests.cached(string(idKeyBytes(&buf, id))); ok {
		return v, nil
	}
	return a.regions.pullRequests.get(ctx, idKey(id), func(ctx context.Context) (domain.PullRequest, error) {
		return a.db.PullRequest(ctx, id)
	})
}

// many returns the cached value of each key, or loads it (load(ctx, i)
// loads keys[i]): the keys not cached on this node are read together
// (l2cache.Region.GetMany: in NEAR mode one message per owner for all of
// them, where one by one cost a round trip each).
func (e entity[T]) many(ctx context.Context, keys []string, load func(ctx context.Context, i int) (T, error)) ([]T, []error) {
	vals, errs := make([]T, len(keys)), make([]error, len(keys))
	var missing []int
	for i, k := range keys {
		if v, ok := e.cached(k); ok {
			vals[i] = v
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) < 2 || e.r == nil {
		for _, i := range missing {
			vals[i], errs[i] = e.get(ctx, keys[i], func(ctx context.Context) (T, error) { return load(ctx, i) })
		}
		return vals, errs
	}
	mkeys := make([]string, len(missing))
	for j, i := range missing {
		mkeys[j] = keys[i]
	}
	got, gerrs := l2cache.Typed[T]{R: e.r}.GetMany(ctx, mkeys, func(ctx context.Context, j int) (T, error) { return load(ctx, missing[j]) })
	for j, i := range missing {
		vals[i], errs[i] = got[j], gerrs[j]
	}
	return vals, errs
}

// pullRequests is pullRequest of each id (a page of a list), read
// together (entity.many).
func (a *api) pullRequests(ctx context.Context, ids []int64) ([]domain.PullRequest, []error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = idKey(id)
	}
	return a.regions.pullRequests.many(ctx, keys, func(ctx context.Context, i int) (domain.PullRequest, error) {
		return a.db.PullRequest(ctx, ids[i])
	})
}

// repositories is repository of each of a project's slugs (a page of a
// list), read together (entity.many).
func (a *api) repositories(ctx context.Context, project string, slugs []string) ([]domain.Repository, []error) {
	keys := make([]string, len(slugs))
	for i, slug := range slugs {
		keys[i] = repoKey(project, slug)
	}
	return a.regions.repositories.many(ctx, keys, func(ctx context.Context, i int) (domain.Repository, error) {
		return a.db.Repository(ctx, project, slugs[i])
	})
}

func (a *api) user(ctx context.Context, id int64) (domain.User, error) {
	var buf keyBuf
	if v, ok := a.regions.users.cached(string(idKeyBytes(&buf, id))); ok {
		return v, nil
	}
	return a.regions.users.get(ctx, idKey(id), func(ctx context.Context) (domain.User, error) { return a.db.UserByID(ctx, id) })
}

func (a *api) repoPullRequestIDs(ctx context.Context, repoID int64) ([]int64, error) {
	var buf keyBuf
	if v, ok := a.regions.repoPRs.cached(string(idKeyBytes(&buf, repoID))); ok {
		return v, nil
	}
	return a.regions.repoPRs.get(ctx, idKey(repoID), func(ctx context.Context) ([]int64, error) {
		return a.db.PullRequestIDs(ctx, repoID)
	})
}

// EvictRepository drops a repository's cached row (and the repository
// lists) on every node, after a change made outside the API, such as a
// push that moved its last-modified time. A nil cache has nothing to drop.
func EvictRepository(ctx context.Context, c *l2cache.Cache, repo domain.Repository) error {
	rg, err := newRegions(c)
	if err != nil {
		return err
	}
	return rg.repositories.evict(ctx, repoKey(repo.ProjectKey, repo.Slug), repoSpaces.buckets[keyBucket(repo.ProjectKey)])
}

// ChangePullRequests applies a change made outside the API to pull
// requests (a push that moved their source branch) with the read-write
// strategy of the API's own updates: every key is soft-locked on every
// node, change runs, then the keys are unlocked (invalidated everywhere)
// and the pull request lists marked written, even if change failed or ctx
// ended. A nil cache just runs change.
func ChangePullRequests(ctx context.Context, c *l2cache.Cache, ids []int64, change func(context.Context) error) error {
	rg, err := newRegions(c)
	if err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	var errs []error
	for _, id := range ids {
		if err := rg.pullRequests.lock(ctx, idKey(id)); err != nil {
			var notAcked *l2cache.NotAckedError
			if !errors.As(err, &notAcked) {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		errs = append(errs, change(ctx))
	}
	for _, id := range ids {
		errs = append(errs, rg.pullRequests.unlock(bg, idKey(id)))
	}
	errs = append(errs, rg.updateSpaces(bg, spacePullRequests))
	return errors.Join(errs...)
}
