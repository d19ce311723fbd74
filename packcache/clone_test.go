package packcache

import (
	"slices"
	"strings"
	"testing"
)

// TestCloneFromCacheIsIdentical clones through the cache twice (a miss,
// then a hit) and once straight from git, and compares the object sets
// and refs, for both protocol versions, full, shallow and partial clones.
func TestCloneFromCacheIsIdentical(t *testing.T) {
	r := newRepo(t, 12)
	repos := map[string]string{"r": r.bare}
	direct := newServer(t, nil, repos, true)
	for _, version := range []string{"0", "2"} {
		for _, mode := range []struct {
			name string
			opts []string
		}{{"full", nil}, {"depth1", []string{"--depth", "1"}}, {"blobnone", []string{"--filter=blob:none"}}} {
			t.Run("v"+version+"/"+mode.name, func(t *testing.T) {
				c := newCache(t, Config{LsRefs: true})
				s := newServer(t, c, repos, false)
				opts := append([]string{"-c", "protocol.version=" + version}, mode.opts...)
				want := objects(t, clone(t, direct.url("r"), opts...))
				refs := run(t, clone(t, direct.url("r"), opts...), "for-each-ref")
				for i, res := range []string{"miss", "hit"} {
					dir := clone(t, s.url("r"), opts...)
					if got := objects(t, dir); !slices.Equal(got, want) {
						t.Fatalf("%s: %d objects, want %d:\n%s", res, len(got), len(want), diff(got, want))
					}
					if got := run(t, dir, "for-each-ref"); got != refs {
						t.Fatalf("%s: refs\n%s\nwant\n%s", res, got, refs)
					}
					// v2 clones ask for the ref listing first: an
					// entry of its own, a miss then a hit too.
					st, lists := c.Stats(), uint64(0)
					if version == "2" {
						lists = 1
					}
					if st.Misses != 1+lists || st.Hits != uint64(i)*(1+lists) || st.Published != 1+lists ||
						st.LsRefsMisses != lists || st.LsRefsHits != uint64(i)*lists {
						t.Fatalf("%s: stats %+v", res, st)
					}
				}
				if s.errs != nil {
					t.Fatalf("serve errors: %v", s.errs)
				}
			})
		}
	}
}

func diff(a, b []string) string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, "+"+x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, "-"+x)
		}
	}
	return strings.Join(out, "\n")
}
