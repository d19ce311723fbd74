package gitfront

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestGuard(t *testing.T, l LoginLimits) (*LoginGuard, *fakeClock, *bytes.Buffer) {
	t.Helper()
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var logs bytes.Buffer
	return NewLoginGuard(l, slog.New(slog.NewTextHandler(&logs, nil)), clock.now), clock, &logs
}

// failUntilRefused records failures of user from remote until the guard
// refuses, and returns how many it took and the refusal.
func failUntilRefused(t *testing.T, g *LoginGuard, user, remote string, limit int) (int, Refusal) {
	t.Helper()
	for i := 0; i < limit; i++ {
		if ref, refused := g.Check(user, remote); refused {
			return i, ref
		}
		g.Fail(user, remote)
	}
	t.Fatalf("%s from %s: not refused after %d failures", user, remote, limit)
	return 0, Refusal{}
}

// A (user, address) pair is refused after its burst, with the time until
// its bucket holds a failure again; the same user from another address
// and other users from the same address go on; the bucket refills.
func TestLoginGuardUserAddress(t *testing.T) {
	g, clock, logs := newTestGuard(t, DefaultLoginLimits())
	n, ref := failUntilRefused(t, g, "alice", "10.0.0.1:5000", 100)
	if n != 10 || ref.By != "user and address" || ref.RetryAfter != 6*time.Second {
		t.Fatalf("refused after %d failures by %q, retry after %v; want 10, user and address, 6s", n, ref.By, ref.RetryAfter)
	}
	if _, refused := g.Check("alice", "10.0.0.2:5000"); refused {
		t.Fatal("alice from another address refused")
	}
	if _, refused := g.Check("bob", "10.0.0.1:6000"); refused {
		t.Fatal("bob from the guessing address refused before the address's bound")
	}
	for range 5 { // the same address again, another port: still refused, logged once
		if _, refused := g.Check("alice", "10.0.0.1:5001"); !refused {
			t.Fatal("another port of the same address let through")
		}
	}
	if got := strings.Count(logs.String(), "too many failed logins"); got != 1 {
		t.Fatalf("%d log lines for one run of refusals:\n%s", got, logs.String())
	}
	clock.add(6 * time.Second)
	if _, refused := g.Check("alice", "10.0.0.1:5000"); refused {
		t.Fatal("still refused once the bucket holds a failure again")
	}
	g.Fail("alice", "10.0.0.1:5000")
	if _, refused := g.Check("alice", "10.0.0.1:5000"); !refused {
		t.Fatal("a failure after the refill let another through at once")
	}
	st := g.Stats()
	if st.Failures != 11 || st.ThrottledUserAddr != 7 || st.ThrottledAddr != 0 || st.ThrottledUser != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// One address guessing many usernames is refused by the address's own
// bound, whatever the username; an IPv6 client counts as its /64.
func TestLoginGuardAddress(t *testing.T) {
	g, _, _ := newTestGuard(t, DefaultLoginLimits())
	for i := range 30 {
		if _, refused := g.Check(fmt.Sprintf("user%d", i), "10.0.0.1:1"); refused {
			t.Fatalf("refused after %d failures of distinct users", i)
		}
		g.Fail(fmt.Sprintf("user%d", i), "10.0.0.1:1")
	}
	ref, refused := g.Check("someone-else", "10.0.0.1:2")
	if !refused || ref.By != "address" || ref.RetryAfter != 2*time.Second {
		t.Fatalf("after 30 failures: %+v %v, want refused by address, retry after 2s", ref, refused)
	}
	if _, refused := g.Check("", "10.0.0.1:2"); !refused {
		t.Fatal("a bearer token from the address let through")
	}
	for i := range 30 {
		g.Fail("", fmt.Sprintf("[2001:db8::%x]:443", i+1))
	}
	if ref, refused := g.Check("", "[2001:db8::ffff]:1"); !refused || ref.By != "address" {
		t.Fatal("another address of the same /64 let through")
	}
	if _, refused := g.Check("", "[2001:db8:0:1::1]:1"); refused {
		t.Fatal("another /64 refused")
	}
	if _, refused := g.Check("", "[::ffff:10.0.0.1]:1"); !refused {
		t.Fatal("the IPv4-mapped form of a refused address let through")
	}
}

// Guesses for one user spread over many addresses empty the user's own
// bucket: then the addresses that failed for that user are refused, and
// an address that did not can still log in.
func TestLoginGuardUserFromManyAddresses(t *testing.T) {
	g, clock, _ := newTestGuard(t, DefaultLoginLimits())
	for i := range 100 {
		remote := fmt.Sprintf("10.1.%d.%d:1", i/250, i%250+1)
		if _, refused := g.Check("alice", remote); refused {
			t.Fatalf("address %d refused before the user's bound", i)
		}
		g.Fail("alice", remote)
	}
	ref, refused := g.Check("alice", "10.1.0.1:2")
	if !refused || ref.By != "user" || ref.RetryAfter != 6*time.Second {
		t.Fatalf("an address that failed, past the user's bound: %+v %v", ref, refused)
	}
	if _, refused := g.Check("alice", "10.9.9.9:1"); refused {
		t.Fatal("an address that never failed for alice refused: the right password could not get through")
	}
	if _, refused := g.Check("bob", "10.1.0.1:2"); refused {
		t.Fatal("another user refused for alice's bound")
	}
	// A new address fails once, and is then refused too.
	g.Fail("alice", "10.9.9.9:1")
	if _, refused := g.Check("alice", "10.9.9.9:1"); !refused {
		t.Fatal("a new address that failed while the user's bucket is empty let through again")
	}
	clock.add(time.Minute) // the pairs and the user's bucket refill
	if _, refused := g.Check("alice", "10.1.0.1:2"); refused {
		t.Fatal("still refused after the refill")
	}
	if g.Stats().ThrottledUser != 2 {
		t.Fatalf("stats %+v", g.Stats())
	}
}

// The tables are bounded: the least recently touched entry goes, and an
// attacker who keeps trying keeps its own entry (and its refusal).
func TestLoginGuardBoundedMemory(t *testing.T) {
	l := DefaultLoginLimits()
	l.MaxEntries = 50
	g, _, _ := newTestGuard(t, l)
	failUntilRefused(t, g, "alice", "10.0.0.1:1", 100)
	for i := range 2000 {
		remote := fmt.Sprintf("10.2.%d.%d:1", i/250, i%250+1)
		g.Fail(fmt.Sprintf("u%d", i), remote)
		if i%10 == 0 {
			if _, refused := g.Check("alice", "10.0.0.1:1"); !refused {
				t.Fatalf("the guessing pair was evicted after %d other failures", i)
			}
		}
	}
	if n := g.Entries(); n > 3*l.MaxEntries {
		t.Fatalf("%d entries, bound %d", n, 3*l.MaxEntries)
	}
}

func TestParseLoginLimit(t *testing.T) {
	for in, want := range map[string]LoginLimit{"10/1m": {10, time.Minute}, " 100 / 10m ": {100, 10 * time.Minute}, "0": {}} {
		got, err := ParseLoginLimit(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
		if back, err := ParseLoginLimit(got.String()); err != nil || back != got {
			t.Errorf("%q: String %q reads back as %v %v", in, got.String(), back, err)
		}
	}
	for _, in := range []string{"", "10", "x/1m", "10/x", "-1/1m", "10/0s", "10/100ms", "10/48h", "0/1m"} {
		if _, err := ParseLoginLimit(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// Through Authenticate: a wrong password is 401 and counted; once the
// bound is reached the answer is 429 with Retry-After, before the
// authenticator is asked; the right password from another address works.
func TestAuthenticateGuarded(t *testing.T) {
	g, _, _ := newTestGuard(t, DefaultLoginLimits())
	var mu sync.Mutex
	checks := 0
	auth := AuthenticatorFuncs{Basic: func(_ context.Context, user, secret string) (Principal, error) {
		mu.Lock()
		checks++
		mu.Unlock()
		if user == "alice" && secret == "right" {
			return Principal{UserID: 1, Name: "alice"}, nil
		}
		return Principal{}, ErrBadCredentials
	}}
	h := AuthenticateGuarded(auth, slog.New(slog.DiscardHandler), g)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	try := func(remote, pw string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/rest/api/1.0/projects", nil)
		r.RemoteAddr = remote
		r.SetBasicAuth("alice", pw)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	codes := map[int]int{}
	for range 50 {
		w := try("10.0.0.1:1", "wrong")
		codes[w.Code]++
		if w.Code == 429 && w.Header().Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[401] != 10 || codes[429] != 40 || checks != 10 {
		t.Fatalf("answers %v after %d checks; want 10×401 then 429s without a check", codes, checks)
	}
	if w := try("10.0.0.1:1", "right"); w.Code != 429 {
		t.Fatalf("the right password from the guessing address: %d", w.Code)
	}
	if w := try("10.0.0.2:1", "right"); w.Code != 200 {
		t.Fatalf("the right password from another address: %d %s", w.Code, w.Body)
	}
	if st := g.Stats(); st.Failures != 10 || st.ThrottledUserAddr != 41 {
		t.Fatalf("stats %+v", st)
	}
}

// An address that failed lately has at most AddrChecks password checks
// in progress: one more gets 429 at once, another address goes on, and a
// finished check frees its place. An address without failures is not
// bounded (many good logins at once from one load generator or NAT).
func TestLoginGuardChecksInProgress(t *testing.T) {
	g, _, _ := newTestGuard(t, DefaultLoginLimits())
	var clean []func(bool)
	for range 5 {
		done, ref, refused := g.Begin("u", "10.0.0.3:1")
		if refused {
			t.Fatalf("a check from an address without failures refused: %+v", ref)
		}
		clean = append(clean, done)
	}
	for _, done := range clean {
		done(false)
	}
	g.Fail("v", "10.0.0.1:9") // 10.0.0.1 has failed lately
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	auth := AuthenticatorFuncs{Basic: func(context.Context, string, string) (Principal, error) {
		entered <- struct{}{}
		<-release
		return Principal{UserID: 1, Name: "u"}, nil
	}}
	h := AuthenticateGuarded(auth, slog.New(slog.DiscardHandler), g)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	try := func(remote string) int {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.SetBasicAuth("u", "pw")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	var wg sync.WaitGroup
	codes := make(chan int, 3)
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); codes <- try("10.0.0.1:1") }()
	}
	<-entered
	<-entered
	if code := try("10.0.0.1:2"); code != 429 {
		t.Fatalf("a third check from the address: %d, want 429", code)
	}
	wg.Add(1)
	go func() { defer wg.Done(); codes <- try("10.0.0.2:1") }()
	<-entered // another address is checked
	close(release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Fatalf("a check in progress answered %d", code)
		}
	}
	if code := try("10.0.0.1:3"); code != 200 {
		t.Fatalf("after the checks ended: %d", code)
	}
	if st := g.Stats(); st.ThrottledConcurrent != 1 || st.Failures != 1 {
		t.Fatalf("stats %+v", st)
	}
}
