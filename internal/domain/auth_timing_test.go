package domain_test

import (
	"context"
	"errors"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/testkit"
)

// An unknown user, a user without a password and a wrong password each
// cost exactly one bcrypt comparison at the store's cost, so their times
// cannot tell which usernames exist: counted, and timed (medians of 15
// within a factor of 2, generous for a loaded machine).
func TestVerifyPasswordSameCost(t *testing.T) {
	ctx := context.Background()
	s, err := domain.Open(ctx, domain.Config{URL: filepath.Join(t.TempDir(), "d.db"), BcryptCost: bcrypt.MinCost + 4,
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
	med := map[string]time.Duration{}
	for _, c := range cases {
		var d []time.Duration
		for range 15 {
			before := s.BcryptCompares()
			t0 := time.Now()
			_, err := s.VerifyPassword(ctx, c.user, "wrong-guess")
			d = append(d, time.Since(t0))
			if !errors.Is(err, domain.ErrBadCredentials) {
				t.Fatalf("%s: %v, want ErrBadCredentials", c.name, err)
			}
			if n := s.BcryptCompares() - before; n != 1 {
				t.Fatalf("%s: %d bcrypt comparisons, want 1", c.name, n)
			}
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		med[c.name] = d[len(d)/2]
	}
	t.Logf("medians: %v", med)
	for _, a := range cases {
		for _, b := range cases {
			if med[a.name] > 2*med[b.name]+5*time.Millisecond {
				t.Errorf("%s (median %v) slower than twice %s (%v)", a.name, med[a.name], b.name, med[b.name])
			}
		}
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
