package gitfront

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestAdvertCache(t *testing.T) {
	c := newAdvertCache(400)
	k := advertKey{repo: "p/r", protocol: "version=2"}
	c.put(k, 1, []byte("one"))
	if d, ok := c.get(k, 1); !ok || string(d) != "one" {
		t.Fatalf("get gen 1: %q %v", d, ok)
	}
	if _, ok := c.get(k, 2); ok {
		t.Fatal("served generation 1 for generation 2")
	}
	if _, ok := c.get(advertKey{repo: "p/r"}, 1); ok {
		t.Fatal("served a v2 advertisement for v0")
	}
	c.put(k, 3, []byte("three"))
	c.put(k, 2, []byte("two")) // a slow run from before the last push
	if d, ok := c.get(k, 3); !ok || string(d) != "three" {
		t.Fatalf("an older generation replaced a newer one: %q %v", d, ok)
	}
	c.put(advertKey{repo: "big"}, 1, make([]byte, 101))
	if _, ok := c.get(advertKey{repo: "big"}, 1); ok {
		t.Fatal("kept an advertisement over a quarter of the budget")
	}
	for i := range 10 {
		c.put(advertKey{repo: string(rune('a' + i))}, 1, make([]byte, 90))
	}
	if c.size > c.max || len(c.entries) != 4 {
		t.Fatalf("size %d of %d with %d entries", c.size, c.max, len(c.entries))
	}
	if _, ok := c.get(advertKey{repo: "j"}, 1); !ok {
		t.Fatal("the most recent entry was evicted")
	}
}

// memGenerations is a Generations whose Bump the test's OnPush calls.
type memGenerations struct {
	mu  sync.Mutex
	gen map[string]uint64
}

func (m *memGenerations) Generation(_ context.Context, repo string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen[repo], nil
}

func (m *memGenerations) Bump(repo string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen[repo]++
}

// TestAdvertCacheEndToEnd: with the cache on, repeated clones get their
// ref advertisement from memory, and a push makes the next clone see the
// new commit.
func TestAdvertCacheEndToEnd(t *testing.T) {
	gens := &memGenerations{gen: map[string]uint64{}}
	w := newGitWorld(t, func(c *Config) {
		c.Git.AdvertGenerations = gens
		c.Git.OnPush = func(_ context.Context, project, repo string) { gens.Bump(RepoName(project, repo)) }
	})
	alice := w.url("alice", "alice-pw-S3cret", "pub")
	src := w.workTree(map[string]string{"a": "1\n"})
	w.mustGit(src, "push", "-q", alice, "main")
	clone := func(v string) string {
		dst := filepath.Join(t.TempDir(), "c")
		w.mustGit("", "-c", "protocol.version="+v, "clone", "-q", w.url("", "", "pub"), dst)
		return w.mustGit(dst, "rev-parse", "HEAD")
	}
	for _, v := range []string{"0", "2", "0", "2"} {
		clone(v)
	}
	if s := w.front.Git().Stats(); s.AdvertHits != 2 || s.AdvertMisses != 2 {
		t.Fatalf("advertisement cache: %d hits, %d misses; want 2 and 2", s.AdvertHits, s.AdvertMisses)
	}
	second := w.commit(src, map[string]string{"a": "2\n"})
	w.mustGit(src, "push", "-q", alice, "main")
	for _, v := range []string{"0", "2"} {
		if head := clone(v); head != second {
			t.Fatalf("v%s clone after a push: HEAD %s, want %s", v, head, second)
		}
	}
	if out := w.mustGit("", "ls-remote", w.url("", "", "pub")); !strings.Contains(out, second) {
		t.Fatalf("ls-remote after a push: %s", out)
	}
}
