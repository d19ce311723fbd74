package gitfront

import (
	"container/list"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/config"
)

// LoginLimit bounds failed logins with a token bucket: Burst failures at
// once, refilled at Burst per Per. The zero LoginLimit bounds nothing.
type LoginLimit struct {
	Burst int
	Per   time.Duration
}

// String is "BURST/PER" ("10/1m"), or "0" for no bound.
func (l LoginLimit) String() string {
	if l.off() {
		return "0"
	}
	per := l.Per.String()
	switch {
	case l.Per%time.Hour == 0:
		per = strconv.FormatInt(int64(l.Per/time.Hour), 10) + "h"
	case l.Per%time.Minute == 0:
		per = strconv.FormatInt(int64(l.Per/time.Minute), 10) + "m"
	}
	return strconv.Itoa(l.Burst) + "/" + per
}

// ParseLoginLimit reads "BURST/PER" ("10/1m": 10 failures at once, 10 more
// a minute), or "0" for no bound.
func ParseLoginLimit(s string) (LoginLimit, error) {
	if strings.TrimSpace(s) == "0" {
		return LoginLimit{}, nil
	}
	b, p, ok := strings.Cut(s, "/")
	burst, err := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err != nil || burst < 1 || burst > 1_000_000 {
		return LoginLimit{}, fmt.Errorf("%q: want BURST/PERIOD, such as 10/1m (1 to 1000000 failures per period), or 0 for no bound", s)
	}
	per, err := time.ParseDuration(strings.TrimSpace(p))
	if err != nil || per < time.Second || per > 24*time.Hour {
		return LoginLimit{}, fmt.Errorf("%q: the period must be a duration from 1s to 24h", s)
	}
	return LoginLimit{Burst: burst, Per: per}, nil
}

func (l LoginLimit) off() bool { return l.Burst <= 0 || l.Per <= 0 }

// every is the rate at which the bucket refills.
func (l LoginLimit) every() rate.Limit { return rate.Limit(float64(l.Burst) / l.Per.Seconds()) }

// LoginLimits bounds password guessing: failed authentications are
// counted per client address, per (username, client address) pair and
// per username. A login is refused with 429 and Retry-After, before its
// credentials are checked, while its address's bucket or its pair's is
// empty; while the username's own bucket is empty, only addresses that
// have failed for that user lately are refused, so the right password
// from an address the guesses do not come from still works. An attacker
// spread over many addresses gets at most User's burst plus one guess per
// new address before the user's bucket refills.
type LoginLimits struct {
	// Addr bounds the failures of one client address (an IPv6 address's
	// /64), whatever the usernames.
	Addr LoginLimit
	// UserAddr bounds the failures for one username from one address.
	UserAddr LoginLimit
	// User bounds the failures for one username from every address.
	User LoginLimit
	// AddrChecks bounds the password checks in progress for one client
	// address that has failed lately (default 2): past it a login gets
	// 429 at once, so that a guessing address cannot take every slot of
	// the password checks (bcrypt) and their queue from the others. An
	// address without recent failures is not bounded. Negative: no bound.
	AddrChecks int
	// MaxEntries bounds each of the three tables (default 10,000); past
	// it the entry touched least recently goes, which is also the one
	// that has refilled the most.
	MaxEntries int
}

// DefaultLoginLimits are 30 failures a minute per address, 10 a minute
// per username and address, 100 per 10 minutes per username, 2 password
// checks at a time per address.
func DefaultLoginLimits() LoginLimits {
	return LoginLimits{
		Addr:       LoginLimit{Burst: 30, Per: time.Minute},
		UserAddr:   LoginLimit{Burst: 10, Per: time.Minute},
		User:       LoginLimit{Burst: 100, Per: 10 * time.Minute},
		AddrChecks: 2,
		MaxEntries: 10_000,
	}
}

// Validate fills a zero MaxEntries and refuses nonsense (a
// *config.FieldError).
func (l *LoginLimits) Validate() error {
	if l.MaxEntries == 0 {
		l.MaxEntries = DefaultLoginLimits().MaxEntries
	}
	if l.AddrChecks == 0 {
		l.AddrChecks = DefaultLoginLimits().AddrChecks
	}
	if l.MaxEntries < 1 || l.MaxEntries > 10_000_000 {
		return config.Invalid("gitfront", "Logins.MaxEntries", l.MaxEntries, "1 to 10000000")
	}
	for name, v := range map[string]LoginLimit{"Addr": l.Addr, "UserAddr": l.UserAddr, "User": l.User} {
		if v.Burst < 0 || v.Per < 0 || (v.Burst > 0) != (v.Per > 0) {
			return config.Invalid("gitfront", "Logins."+name, v, "a burst and a period, both positive, or both zero for no bound")
		}
	}
	return nil
}

// LoginStats counts failed logins and the logins refused for them.
type LoginStats struct {
	// Failures are authentications refused for bad credentials (401).
	Failures uint64
	// Throttled are logins refused with 429 before their credentials
	// were checked, by the bound that refused them (Concurrent: the
	// address's password checks in progress).
	ThrottledAddr, ThrottledUserAddr, ThrottledUser, ThrottledConcurrent uint64
}

// LoginGuard applies LoginLimits. Safe for concurrent use; its memory is
// bounded by MaxEntries.
type LoginGuard struct {
	cfg  LoginLimits
	now  func() time.Time
	seed maphash.Seed
	log  *slog.Logger

	mu               sync.Mutex
	addr, pair, user *bucketTable
	checking         map[string]int // client address → password checks in progress

	failures                           atomic.Uint64
	thrAddr, thrPair, thrUser, thrConc atomic.Uint64
}

// NewLoginGuard makes a guard; cfg must have been validated. now is the
// clock (nil: time.Now).
func NewLoginGuard(cfg LoginLimits, log *slog.Logger, now func() time.Time) *LoginGuard {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.MaxEntries < 1 {
		cfg.MaxEntries = DefaultLoginLimits().MaxEntries
	}
	return &LoginGuard{cfg: cfg, now: now, seed: maphash.MakeSeed(), log: log, checking: map[string]int{},
		addr: newBucketTable(cfg.Addr, cfg.MaxEntries),
		pair: newBucketTable(cfg.UserAddr, cfg.MaxEntries),
		user: newBucketTable(cfg.User, cfg.MaxEntries)}
}

// Stats returns the guard's counters.
func (g *LoginGuard) Stats() LoginStats {
	return LoginStats{Failures: g.failures.Load(), ThrottledAddr: g.thrAddr.Load(),
		ThrottledUserAddr: g.thrPair.Load(), ThrottledUser: g.thrUser.Load(), ThrottledConcurrent: g.thrConc.Load()}
}

// Entries is how many buckets the three tables hold (for tests).
func (g *LoginGuard) Entries() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addr.lru.Len() + g.pair.lru.Len() + g.user.lru.Len()
}

// Refusal says why a login was refused before its check.
type Refusal struct {
	// By is the bound: "address", "user and address" or "user".
	By string
	// RetryAfter is when the bound admits a failure again.
	RetryAfter time.Duration
}

// Begin is Check for a login about to be checked, and, when it is not
// refused and user is set (a password check), counts the check in
// progress against the address's AddrChecks. The caller calls done once
// the check is over, with whether the credentials were bad (Fail).
func (g *LoginGuard) Begin(user, remote string) (done func(bad bool), ref Refusal, refused bool) {
	if ref, refused = g.Check(user, remote); refused {
		return nil, ref, true
	}
	if user == "" || g.cfg.AddrChecks < 0 {
		return func(bad bool) {
			if bad {
				g.Fail(user, remote)
			}
		}, Refusal{}, false
	}
	a := clientKey(remote)
	g.mu.Lock()
	if b := g.addr.get(g.hash("a", a, "")); b == nil || !b.drained(g.now()) {
		// An address that has not failed lately is not bounded: a load
		// generator, a CI runner or a NAT sends many good logins at once,
		// most of them answered from the password cache, not by bcrypt.
		// The bcrypt gate bounds them all; the bound below holds back an
		// address once its guesses start failing.
		g.mu.Unlock()
		return func(bad bool) {
			if bad {
				g.Fail(user, remote)
			}
		}, Refusal{}, false
	}
	if g.checking[a] >= g.cfg.AddrChecks {
		g.mu.Unlock()
		g.thrConc.Add(1)
		return nil, Refusal{By: "checks in progress from the address", RetryAfter: time.Second}, true
	}
	g.checking[a]++
	g.mu.Unlock()
	var once sync.Once
	return func(bad bool) {
		once.Do(func() {
			g.mu.Lock()
			if g.checking[a]--; g.checking[a] <= 0 {
				delete(g.checking, a)
			}
			g.mu.Unlock()
			if bad {
				g.Fail(user, remote)
			}
		})
	}, Refusal{}, false
}

// Check reports whether a login as user ("" for a bearer token) from
// remote (an http.Request's RemoteAddr) must be refused before its
// credentials are checked.
func (g *LoginGuard) Check(user, remote string) (Refusal, bool) {
	a := clientKey(remote)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.addr.get(g.hash("a", a, "")); b != nil {
		if wait := b.wait(now); wait > 0 {
			g.refused(b, &g.thrAddr, "address", user, remote, wait)
			return Refusal{By: "address", RetryAfter: wait}, true
		}
	}
	if user == "" {
		return Refusal{}, false
	}
	p := g.pair.get(g.hash("p", a, user))
	if p != nil {
		if wait := p.wait(now); wait > 0 {
			g.refused(p, &g.thrPair, "user and address", user, remote, wait)
			return Refusal{By: "user and address", RetryAfter: wait}, true
		}
	}
	// The user's own bound refuses only the addresses that failed for
	// this user lately: the others may still log in.
	if u := g.user.get(g.hash("u", "", user)); u != nil && p != nil && p.drained(now) {
		if wait := u.wait(now); wait > 0 {
			g.refused(u, &g.thrUser, "user", user, remote, wait)
			return Refusal{By: "user", RetryAfter: wait}, true
		}
	}
	return Refusal{}, false
}

// Fail records a failed login as user ("" for a bearer token) from remote.
func (g *LoginGuard) Fail(user, remote string) {
	g.failures.Add(1)
	a := clientKey(remote)
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.addr.take(g.hash("a", a, ""), now)
	if user != "" {
		g.pair.take(g.hash("p", a, user), now)
		g.user.take(g.hash("u", "", user), now)
	}
}

// refused counts a refusal and logs the first of a run of them.
func (g *LoginGuard) refused(b *bucket, n *atomic.Uint64, by, user, remote string, wait time.Duration) {
	n.Add(1)
	if b.refusing {
		return
	}
	b.refusing = true
	attrs := []any{"by", by, "remote", remote, "retry_after", wait.Round(time.Second)}
	if user != "" {
		attrs = append(attrs, "user", user)
	}
	g.log.Warn("gitfront: too many failed logins; refusing logins (429) until the bound refills", attrs...)
}

func (g *LoginGuard) hash(kind, addr, user string) uint64 {
	var h maphash.Hash
	h.SetSeed(g.seed)
	h.WriteString(kind)
	h.WriteByte(0)
	h.WriteString(addr)
	h.WriteByte(0)
	h.WriteString(user)
	return h.Sum64()
}

// clientKey is the client address a bound counts: the IP of remote, an
// IPv6 address's /64 (one host usually has a whole one).
func clientKey(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		host := remote
		if i := strings.LastIndexByte(remote, ':'); i > 0 {
			host = remote[:i]
		}
		return host
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}

// bucketTable is a bounded map of token buckets, least recently touched
// first out. Its caller holds the guard's lock.
type bucketTable struct {
	limit LoginLimit
	max   int
	m     map[uint64]*list.Element
	lru   *list.List // of *bucket, most recently touched first
}

type bucket struct {
	key uint64
	lim *rate.Limiter
	// refusing: a refusal was logged and none has been let through since.
	refusing bool
}

func newBucketTable(limit LoginLimit, max int) *bucketTable {
	return &bucketTable{limit: limit, max: max, m: map[uint64]*list.Element{}, lru: list.New()}
}

// get returns the key's bucket (touching it), nil if there is none.
func (t *bucketTable) get(key uint64) *bucket {
	if t.limit.off() {
		return nil
	}
	e := t.m[key]
	if e == nil {
		return nil
	}
	t.lru.MoveToFront(e)
	return e.Value.(*bucket)
}

// take removes a token from the key's bucket, making the bucket if
// needed (and dropping the least recently touched one when full). An
// empty bucket stays empty.
func (t *bucketTable) take(key uint64, now time.Time) {
	if t.limit.off() {
		return
	}
	b := t.get(key)
	if b == nil {
		for t.lru.Len() >= t.max {
			old := t.lru.Back()
			t.lru.Remove(old)
			delete(t.m, old.Value.(*bucket).key)
		}
		b = &bucket{key: key, lim: rate.NewLimiter(t.limit.every(), t.limit.Burst)} // full
		t.m[key] = t.lru.PushFront(b)
	}
	b.lim.AllowN(now, 1)
}

// wait is how long until the bucket holds a token (0: it does).
func (b *bucket) wait(now time.Time) time.Duration {
	tokens := b.lim.TokensAt(now)
	if tokens >= 1 {
		b.refusing = false
		return 0
	}
	secs := (1 - tokens) / float64(b.lim.Limit())
	return max(time.Duration(math.Ceil(secs*float64(time.Second))), time.Millisecond)
}

// drained reports whether the bucket has lost tokens it has not got back:
// its key failed lately.
func (b *bucket) drained(now time.Time) bool {
	return b.lim.TokensAt(now) < float64(b.lim.Burst())
}
