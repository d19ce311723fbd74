package domain

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TokenPrefix starts every access token, so that logs and scanners can
// recognise one (and VerifyPassword knows to try the token first).
const TokenPrefix = "shoal_"

// CreateToken makes a new access token named name for the user and
// returns it in plain text: the only time it exists outside the caller,
// since only its SHA-256 digest is stored. A name the user already uses is
// ErrConflict; an unknown user is ErrNotFound.
func (s *Store) CreateToken(ctx context.Context, userID int64, name string) (string, error) {
	if err := checkText("token name", name, true, MaxNameLen); err != nil {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("domain: token: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	digest := tokenDigest(token)
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO access_tokens (user_id, name, token_hash, created)
		SELECT id, ?, ?, ? FROM users WHERE id = ?`), name, digest[:], s.now(), userID)
	if err == nil {
		_, err = s.UserByID(ctx, userID) // the insert selects nothing for an unknown user
	}
	return token, mapErr(err, fmt.Sprintf("domain: create token %q for user %d", name, userID))
}

// RevokeToken deletes the user's token named name; ErrNotFound if there
// is none.
func (s *Store) RevokeToken(ctx context.Context, userID int64, name string) error {
	res, err := s.db.ExecContext(ctx, s.q("DELETE FROM access_tokens WHERE user_id = ? AND name = ?"), userID, name)
	return mapErr(oneRow(res, err), fmt.Sprintf("domain: revoke token %q of user %d", name, userID))
}

func tokenDigest(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// VerifyToken returns the owner of an access token (a Bearer token).
// Unknown tokens are ErrBadCredentials; a database failure is
// ErrUnavailable, never ErrBadCredentials.
func (s *Store) VerifyToken(ctx context.Context, token string) (User, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return User{}, ErrBadCredentials
	}
	digest := tokenDigest(token)
	var stored []byte
	var u User
	err := s.queryRow(ctx, `SELECT u.id, u.name, u.display_name, u.email, u.admin, u.created, t.token_hash
		FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?`, digest[:]).
		Scan(&u.ID, &u.Name, &u.DisplayName, &u.Email, &u.Admin, &u.Created, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrBadCredentials
	}
	if err != nil {
		return User{}, mapErr(err, "domain: verify token")
	}
	if subtle.ConstantTimeCompare(stored, digest[:]) != 1 {
		return User{}, ErrBadCredentials
	}
	return u, nil
}

// VerifyPassword authenticates Basic credentials: secret is the user's
// password or one of the user's access tokens. Wrong credentials, an
// unknown user and a user without a password are all ErrBadCredentials,
// and cost the same: one bcrypt comparison (against a dummy hash when
// there is no hash to compare with), so that the time taken does not
// tell which usernames exist. Comparisons run at most
// Config.BcryptConcurrency at a time; ErrBusy when too many wait. A
// database failure is ErrUnavailable.
func (s *Store) VerifyPassword(ctx context.Context, username, secret string) (User, error) {
	u, hash, err := s.userWithHash(ctx, username)
	if errors.Is(err, ErrNotFound) {
		return User{}, firstErr(s.compare(ctx, s.dummyHash(), secret), ErrBadCredentials)
	}
	if err != nil {
		return User{}, err
	}
	if strings.HasPrefix(secret, TokenPrefix) {
		ok, err := s.userOwnsToken(ctx, u.ID, secret)
		if err != nil {
			return User{}, err
		}
		if ok {
			return u, nil
		}
	}
	if hash == "" || secret == "" {
		return User{}, firstErr(s.compare(ctx, s.dummyHash(), secret), ErrBadCredentials)
	}
	if err := s.passwords.check(ctx, u.ID, hash, secret, func() error { return s.compare(ctx, []byte(hash), secret) }); err != nil {
		return User{}, err
	}
	return u, nil
}

// compare is one bcrypt comparison within the gate: nil for a match,
// ErrBadCredentials for none, ErrBusy or ctx's error without comparing.
func (s *Store) compare(ctx context.Context, hash []byte, secret string) error {
	if err := s.bcrypts.enter(ctx); err != nil {
		return err
	}
	defer s.bcrypts.leave()
	s.bcrypts.compares.Add(1)
	if bcrypt.CompareHashAndPassword(hash, []byte(secret)) != nil {
		return ErrBadCredentials
	}
	return nil
}

// BcryptCompares counts the password comparisons made, matched or not.
func (s *Store) BcryptCompares() uint64 { return s.bcrypts.compares.Load() }

// BcryptBusy counts the checks refused with ErrBusy.
func (s *Store) BcryptBusy() uint64 { return s.bcrypts.busy.Load() }

// bcryptGate bounds the comparisons running at once and those waiting.
type bcryptGate struct {
	slots    chan struct{}
	waiting  atomic.Int64
	queue    int64
	compares atomic.Uint64
	busy     atomic.Uint64
}

func newBcryptGate(n, queue int) *bcryptGate {
	return &bcryptGate{slots: make(chan struct{}, max(n, 1)), queue: int64(queue)}
}

func (g *bcryptGate) enter(ctx context.Context) error {
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	if g.waiting.Add(1) > g.queue {
		g.waiting.Add(-1)
		g.busy.Add(1)
		return ErrBusy
	}
	defer g.waiting.Add(-1)
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *bcryptGate) leave() { <-g.slots }

func (s *Store) userWithHash(ctx context.Context, name string) (User, string, error) {
	var u User
	var hash string
	err := s.queryRow(ctx, "SELECT "+userColumns+", password_hash FROM users WHERE name = ?", name).
		Scan(&u.ID, &u.Name, &u.DisplayName, &u.Email, &u.Admin, &u.Created, &hash)
	return u, hash, mapErr(err, "domain: verify password")
}

func (s *Store) userOwnsToken(ctx context.Context, userID int64, token string) (bool, error) {
	digest := tokenDigest(token)
	var stored []byte
	err := s.queryRow(ctx, "SELECT token_hash FROM access_tokens WHERE token_hash = ? AND user_id = ?",
		digest[:], userID).Scan(&stored)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, mapErr(err, "domain: verify token")
	}
	return subtle.ConstantTimeCompare(stored, digest[:]) == 1, nil
}

// dummyHash is a bcrypt hash at the store's cost to compare against when
// there is no hash (an unknown user, a user without a password), made
// once per store so that its cost is the store's.
func (s *Store) dummyHash() []byte {
	s.dummy.once.Do(func() {
		s.dummy.hash, _ = bcrypt.GenerateFromPassword([]byte("no such user"), s.cfg.BcryptCost)
	})
	return s.dummy.hash
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// verifiedCache remembers successful password verifications for a short
// time, so that a client sending Basic credentials on every request pays
// bcrypt once per TTL instead of once per request. Keys are HMACs under a
// per-process random key of (user, stored hash, password): nothing in
// memory is a fast hash of the password alone, and a new password (a new
// stored hash) never matches an old entry. Failures are not remembered.
type verifiedCache struct {
	ttl time.Duration
	now func() time.Time
	key [32]byte

	mu      sync.Mutex
	entries map[[32]byte]time.Time
	flights map[[32]byte]*flight // comparisons in progress, by key
}

// flight is one comparison in progress, which the checks of the same
// credentials that arrive meanwhile wait for.
type flight struct {
	done chan struct{}
	err  error
}

// maxVerified bounds the cache; when full, expired entries go, and if that
// is not enough, everything does.
const maxVerified = 10_000

func newVerifiedCache(ttl time.Duration, now func() time.Time) *verifiedCache {
	c := &verifiedCache{ttl: ttl, now: now, entries: map[[32]byte]time.Time{}, flights: map[[32]byte]*flight{}}
	rand.Read(c.key[:])
	return c
}

func (c *verifiedCache) mac(userID int64, hash, password string) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	binary.Write(m, binary.BigEndian, userID)
	m.Write([]byte(hash))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

func (c *verifiedCache) verified(userID int64, hash, password string) bool {
	if c.ttl < 0 {
		return false
	}
	k := c.mac(userID, hash, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.liveLocked(k)
}

func (c *verifiedCache) liveLocked(k [32]byte) bool {
	exp, ok := c.entries[k]
	return ok && c.now().Before(exp)
}

func (c *verifiedCache) remember(userID int64, hash, password string) {
	if c.ttl < 0 {
		return
	}
	k := c.mac(userID, hash, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rememberLocked(k)
}

func (c *verifiedCache) rememberLocked(k [32]byte) {
	now := c.now()
	if len(c.entries) >= maxVerified {
		for key, exp := range c.entries {
			if !now.Before(exp) {
				delete(c.entries, key)
			}
		}
		if len(c.entries) >= maxVerified {
			clear(c.entries)
		}
	}
	c.entries[k] = now.Add(c.ttl)
}

// check verifies password against userID's stored hash: at once when a
// success is remembered, else with compare, whose outcome the checks of
// the same credentials that arrive while it runs share. So when the
// entry of a client that sends Basic credentials on every request
// expires, its requests in flight cost one comparison, not one each —
// which the bcrypt gate would refuse (ErrBusy, a 503) beyond its queue.
// Only a match or a mismatch is shared: when the comparison could not
// run (ErrBusy, its request's context ended) the waiting checks try
// again themselves. With the cache disabled every check compares.
func (c *verifiedCache) check(ctx context.Context, userID int64, hash, password string, compare func() error) error {
	if c.ttl < 0 {
		return compare()
	}
	k := c.mac(userID, hash, password)
	for {
		c.mu.Lock()
		if c.liveLocked(k) {
			c.mu.Unlock()
			return nil
		}
		f := c.flights[k]
		if f == nil {
			f = &flight{done: make(chan struct{}), err: errCheckAborted}
			c.flights[k] = f
			c.mu.Unlock()
			return c.fly(k, f, compare)
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.err == nil || errors.Is(f.err, ErrBadCredentials) {
			return f.err
		}
	}
}

// errCheckAborted is a flight's outcome until its comparison returns.
var errCheckAborted = errors.New("domain: the password comparison did not finish")

// fly runs a flight's comparison and lands it (also if compare panics).
func (c *verifiedCache) fly(k [32]byte, f *flight, compare func() error) error {
	defer func() {
		c.mu.Lock()
		delete(c.flights, k)
		if f.err == nil {
			c.rememberLocked(k)
		}
		c.mu.Unlock()
		close(f.done)
	}()
	f.err = compare()
	return f.err
}
