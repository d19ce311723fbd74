package rest_test

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
	"github.com/shoal-dev/shoal/internal/rest"
	"github.com/shoal-dev/shoal/internal/testkit"
	"github.com/shoal-dev/shoal/l2cache"
)

// withTTL starts a node whose API reuses read-permission decisions for ttl.
func withTTL(t *testing.T, ttl time.Duration) (*node, *world) {
	path := domaintest.Path(t)
	w := seedWorld(t, path)
	n := startNodeWith(t, path, newLocalCache(t, l2cache.Config{}), w, func(c *rest.Config) { c.PermissionTTL = ttl })
	return n, w
}

// A read-permission decision on a private repository is reused for
// PermissionTTL: a revocation made in the database meanwhile (as `shoal
// user grant ... NONE` makes it) is not seen by reads until it expires,
// while writes, which always ask the database, see it at once.
func TestReadPermissionReused(t *testing.T) {
	n, w := withTTL(t, time.Hour)
	n.do(t, "GET", prPath(w.prs[0]), "reader", nil).want(t, 200)
	n.do(t, "GET", prPath(w.prs[0]), "writer", nil).want(t, 200)
	check(t, n.store.Grant(ctx, w.users["reader"], "PROJ", "secret", domain.PermNone))
	check(t, n.store.Grant(ctx, w.users["writer"], "PROJ", "secret", domain.PermNone))
	n.do(t, "GET", prPath(w.prs[0]), "reader", nil).want(t, 200)
	n.do(t, "GET", "/projects/PROJ/repos/secret", "reader", nil).want(t, 200)
	n.do(t, "PUT", prPath(w.prs[0]), "writer", []byte(`{"version": 0, "title": "x"}`)).want(t, 404)
	// A decision is the user's own: a stranger never read, so is asked for.
	n.do(t, "GET", prPath(w.prs[0]), "stranger", nil).want(t, 404)
	// And a grant is reused as a refusal was: the stranger stays refused.
	check(t, n.store.Grant(ctx, w.users["stranger"], "PROJ", "secret", domain.PermRead))
	n.do(t, "GET", prPath(w.prs[0]), "stranger", nil).want(t, 404)
}

// A revocation reaches reads once the decision expires; with a negative
// PermissionTTL, at once.
func TestReadPermissionExpires(t *testing.T) {
	t.Run("ttl", func(t *testing.T) {
		n, w := withTTL(t, 50*time.Millisecond)
		n.do(t, "GET", prPath(w.prs[0]), "reader", nil).want(t, 200)
		check(t, n.store.Grant(ctx, w.users["reader"], "PROJ", "secret", domain.PermNone))
		testkit.Eventually(t, 10*time.Second, "the revocation to reach reads", func() bool {
			return n.do(t, "GET", prPath(w.prs[0]), "reader", nil).status == 404
		})
	})
	t.Run("none", func(t *testing.T) {
		n, w := withTTL(t, -1)
		n.do(t, "GET", prPath(w.prs[0]), "reader", nil).want(t, 200)
		check(t, n.store.Grant(ctx, w.users["reader"], "PROJ", "secret", domain.PermNone))
		n.do(t, "GET", prPath(w.prs[0]), "reader", nil).want(t, 404)
		check(t, n.store.Grant(ctx, w.users["reader"], "PROJ", "secret", domain.PermRead))
		n.do(t, "GET", prPath(w.prs[0]), "reader", nil).want(t, 200)
	})
}
