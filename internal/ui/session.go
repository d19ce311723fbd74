package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/gitfront"
)

// cookieNames are the session cookie's name and the login form's CSRF
// cookie's (double-submitted: the cookie and a hidden field), with the
// node's name in them: a browser sends a host's cookies to every port, and
// the nodes of one machine (shoal up) must not overwrite each other's.
func cookieNames(node string) (session, login string) {
	var b strings.Builder
	for _, c := range node {
		if c < 128 && (c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return "shoal_ui_" + b.String(), "shoal_ui_login_" + b.String()
}

// session is a logged-in browser.
type session struct {
	user    gitfront.Principal
	csrf    string
	created time.Time
	seen    time.Time
}

// sessions are the logged-in browsers, by the SHA-256 of their cookie
// (the cookie itself is not kept).
type sessions struct {
	mu                sync.Mutex
	byID              map[[32]byte]*session
	max, maxUser      int
	idle, age         time.Duration
	now               func() time.Time
	created, expired  uint64
	evicted, loggedIn uint64
}

func newSessions(max, maxUser int, idle, age time.Duration) *sessions {
	return &sessions{byID: map[[32]byte]*session{}, max: max, maxUser: maxUser, idle: idle, age: age, now: time.Now}
}

// randomToken is 32 random bytes, base64url.
func randomToken() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("ui: no randomness: " + err.Error()) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func sessionKey(cookie string) [32]byte { return sha256.Sum256([]byte(cookie)) }

// create makes a session for p and returns its cookie value. Past the
// bounds (all sessions, or p's), the least recently used goes.
func (s *sessions) create(p gitfront.Principal) (cookie string, sess *session) {
	cookie = randomToken()
	now := s.now()
	sess = &session{user: p, csrf: randomToken(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	var mine []([32]byte)
	for k, o := range s.byID {
		if o.user.UserID == p.UserID {
			mine = append(mine, k)
		}
	}
	if len(mine) >= s.maxUser {
		s.evictOldestLocked(mine)
	}
	if len(s.byID) >= s.max {
		s.evictOldestLocked(nil)
	}
	s.byID[sessionKey(cookie)] = sess
	s.created++
	return cookie, sess
}

// evictOldestLocked removes the least recently seen session among keys
// (nil: among all).
func (s *sessions) evictOldestLocked(keys [][32]byte) {
	var oldest [32]byte
	var at time.Time
	found := false
	consider := func(k [32]byte, o *session) {
		if !found || o.seen.Before(at) {
			oldest, at, found = k, o.seen, true
		}
	}
	if keys == nil {
		for k, o := range s.byID {
			consider(k, o)
		}
	} else {
		for _, k := range keys {
			consider(k, s.byID[k])
		}
	}
	if found {
		delete(s.byID, oldest)
		s.evicted++
	}
}

// get returns the live session of a cookie and marks it seen; nil if
// there is none or it expired.
func (s *sessions) get(cookie string) *session {
	if cookie == "" {
		return nil
	}
	k := sessionKey(cookie)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.byID[k]
	if sess == nil {
		return nil
	}
	if s.expiredLocked(sess, now) {
		delete(s.byID, k)
		s.expired++
		return nil
	}
	sess.seen = now
	return sess
}

// valid reports whether the session is still live, without marking it
// seen (an open event stream does not keep a session alive).
func (s *sessions) valid(cookie string, sess *session) bool {
	k := sessionKey(cookie)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[k] == sess && !s.expiredLocked(sess, s.now())
}

func (s *sessions) expiredLocked(sess *session, now time.Time) bool {
	return now.Sub(sess.seen) > s.idle || now.Sub(sess.created) > s.age
}

// remove ends a session (logout).
func (s *sessions) remove(cookie string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, sessionKey(cookie))
}

// sweep drops the expired sessions.
func (s *sessions) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.now())
}

func (s *sessions) sweepLocked(now time.Time) {
	for k, o := range s.byID {
		if s.expiredLocked(o, now) {
			delete(s.byID, k)
			s.expired++
		}
	}
}

func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

// sameToken compares two CSRF tokens in constant time; empty never
// matches.
func sameToken(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
