package domain_test

import (
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/domain"
	"github.com/shoal-dev/shoal/internal/domain/domaintest"
)

// BenchmarkVerifyPassword: Basic authentication at bcrypt's default cost,
// every time (cache off) and with the verification cache.
func BenchmarkVerifyPassword(b *testing.B) {
	for _, c := range []struct {
		name string
		ttl  time.Duration
	}{{"bcrypt-every-time", -1}, {"cached", time.Minute}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := domaintest.Config(b)
			cfg.BcryptCost, cfg.PasswordCacheTTL = bcrypt.DefaultCost, c.ttl
			s, _ := domaintest.Open(b, domaintest.Path(b), cfg)
			if _, err := s.CreateUser(ctx, domain.NewUser{Name: "u", Password: "correct horse"}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.VerifyPassword(ctx, "u", "correct horse"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
