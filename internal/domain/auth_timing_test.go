package domain_test

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// An unknown user, a user without a password and a wrong password each
// cost exactly one bcrypt comparison at the store's cost, so their times
// cannot tell which usernames exist: counted, and timed — 50 rounds, each
// timing the three back to back in a rotating order; the median over the
// rounds of each pair's ratio of CPU time (the test's thread's, on Linux)
// is within 20 % of 1, and of wall time within a factor of 2. (Ratios
// within a round, rather than three separate medians, so that the load of
// a shared machine, which changes from one second to the next, weighs on
// both sides of each ratio alike. Wall times alone were not enough on a
// loaded machine: waiting for a core made a call's time vary by half,
// and a median ratio of 50 strayed past 20 % in 2 of 18 runs at load
// 20-25 — a different pair each time; the CPU time a call used does not
// include those waits. The factor of 2 on wall time still catches a path
// that waits, which CPU time would not show.)
func TestVerifyPasswordSameCost(t *testing.T) {
	ctx := context.Background()
	s, err := domain.Open(ctx, domain.Config{URL: filepath.Join(t.TempDir(), "d.db"), BcryptCost: bcrypt.MinCost + 1,
		PasswordCacheTTL: -1, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateUser(ctx, domain.NewUser{Name: "pw", Password: "right-pass"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, domain.NewUser{Name: "nopw"}); err != nil {
		t.Fatal(err)
	}
	s.VerifyPassword(ctx, "ghost", "warm-up") // makes the store's dummy hash
	cases := []struct{ name, user string }{{"unknown user", "ghost"}, {"no password", "nopw"}, {"wrong password", "pw"}}
	const rounds = 50
	// The calls run on this goroutine, kept on one thread so that its CPU
	// time is theirs.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	times := make([][]time.Duration, len(cases)) // wall
	cpus := make([][]time.Duration, len(cases))
	for round := range rounds {
		for k := range cases {
			i := (round + k) % len(cases)
			c := cases[i]
			before := s.BcryptCompares()
			t0, c0 := time.Now(), threadCPU()
			_, err := s.VerifyPassword(ctx, c.user, "wrong-guess")
			cpus[i] = append(cpus[i], threadCPU()-c0)
			times[i] = append(times[i], time.Since(t0))
			if !errors.Is(err, domain.ErrBadCredentials) {
				t.Fatalf("%s: %v, want ErrBadCredentials", c.name, err)
			}
			if n := s.BcryptCompares() - before; n != 1 {
				t.Fatalf("%s: %d bcrypt comparisons, want 1", c.name, n)
			}
		}
	}
	median := func(d []float64) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)/2]
	}
	medians := func(times [][]time.Duration) []time.Duration {
		med := make([]time.Duration, len(times))
		for i, d := range times {
			ms := make([]float64, len(d))
			for k := range d {
				ms[k] = float64(d[k])
			}
			med[i] = time.Duration(median(ms))
		}
		return med
	}
	check := func(kind string, times [][]time.Duration, bound float64) {
		med := medians(times)
		t.Logf("%s, medians of %d: unknown user %v, no password %v, wrong password %v", kind, rounds, med[0], med[1], med[2])
		for i := range cases {
			for j := i + 1; j < len(cases); j++ {
				ratios := make([]float64, rounds)
				for r := range rounds {
					ratios[r] = float64(times[i][r]) / float64(times[j][r])
				}
				m := median(ratios)
				t.Logf("%s: %s / %s: median ratio %.3f", kind, cases[i].name, cases[j].name, m)
				if m > bound || m < 1/bound {
					t.Errorf("%s: %s against %s: median ratio %.3f over %d rounds, want within a factor of %.1f", kind, cases[i].name, cases[j].name, m, rounds, bound)
				}
			}
		}
	}
	if haveThreadCPU {
		for i := range cpus {
			if slices.Min(cpus[i]) <= 0 {
				t.Fatalf("%s: a call used no CPU time by the thread's clock: %v", cases[i].name, cpus[i])
			}
		}
		check("CPU time", cpus, 1.2)
		check("wall time", times, 2)
	} else {
		check("wall time", times, 1.2)
	}
	if _, err := s.VerifyPassword(ctx, "pw", "right-pass"); err != nil {
		t.Fatalf("the right password: %v", err)
	}
}

// Comparisons beyond the gate's slots and queue are refused with ErrBusy
// at once, never run: 40 wrong guesses at once through a gate of 1 slot
// and a queue of 2.
func TestVerifyPasswordGate(t *testing.T) {
	ctx := context.Background()
	s, err := domain.Open(ctx, domain.Config{URL: filepath.Join(t.TempDir(), "d.db"), BcryptCost: bcrypt.MinCost + 6,
		BcryptConcurrency: 1, BcryptQueue: 2, PasswordCacheTTL: -1, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateUser(ctx, domain.NewUser{Name: "pw", Password: "right-pass"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	busy, bad := 0, 0
	for range 40 {
		wg.Go(func() {
			_, err := s.VerifyPassword(ctx, "pw", "wrong")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, domain.ErrBusy):
				busy++
			case errors.Is(err, domain.ErrBadCredentials):
				bad++
			default:
				t.Errorf("VerifyPassword: %v", err)
			}
		})
	}
	wg.Wait()
	t.Logf("%d refused busy, %d compared", busy, bad)
	if busy == 0 || uint64(bad) != s.BcryptCompares() || s.BcryptBusy() != uint64(busy) {
		t.Errorf("busy %d (counted %d), compared %d (counted %d)", busy, s.BcryptBusy(), bad, s.BcryptCompares())
	}
}

// When a remembered verification expires, the requests of a client that
// sends its password with each one arrive together: they share one
// comparison instead of each taking a place at the gate, where beyond its
// slot and queue they were refused ErrBusy (a 503 in the middle of a
// workload, once a minute). 40 at once through a gate of 1 slot and a
// queue of 1, after the entry expired: all pass, one comparison. The same
// wrong password 40 times at once: all refused as bad credentials, none
// busy.
func TestVerifyPasswordExpiryShared(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	s, err := domain.Open(ctx, domain.Config{URL: filepath.Join(t.TempDir(), "d.db"), BcryptCost: bcrypt.MinCost + 6,
		BcryptConcurrency: 1, BcryptQueue: 1, PasswordCacheTTL: time.Minute, Now: clock, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateUser(ctx, domain.NewUser{Name: "pw", Password: "right-pass"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyPassword(ctx, "pw", "right-pass"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(time.Minute + time.Second)
	mu.Unlock()
	before := s.BcryptCompares()
	run := func(pass string) (ok, bad, other int) {
		var wg sync.WaitGroup
		var rmu sync.Mutex
		start := make(chan struct{})
		for range 40 {
			wg.Go(func() {
				<-start
				_, err := s.VerifyPassword(ctx, "pw", pass)
				rmu.Lock()
				defer rmu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, domain.ErrBadCredentials):
					bad++
				default:
					other++
					t.Errorf("VerifyPassword(%q): %v", pass, err)
				}
			})
		}
		close(start)
		wg.Wait()
		return ok, bad, other
	}
	if ok, _, _ := run("right-pass"); ok != 40 {
		t.Errorf("%d of 40 passed", ok)
	}
	if n := s.BcryptCompares() - before; n != 1 {
		t.Errorf("%d comparisons for 40 checks after the expiry, want 1", n)
	}
	before = s.BcryptCompares()
	_, bad, _ := run("wrong-pass")
	t.Logf("the same wrong password 40 times at once: %d comparisons", s.BcryptCompares()-before)
	if bad != 40 || s.BcryptBusy() != 0 {
		t.Errorf("%d of 40 refused as bad credentials, %d busy", bad, s.BcryptBusy())
	}
}
