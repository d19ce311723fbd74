// Package ui is the dashboard every node serves at /ui/: the cluster,
// the partition table, the caches, git, the jobs and the consistent
// store, as HTML pages rendered on the node (html/template) from files
// embedded in the binary, with live updates over Server-Sent Events.
//
// # Data
//
// A sampler goroutine reads the node's parts every Config.Interval (and
// at once on a membership change or an operator's action): members, raft,
// the partition table, the node's counters (and, through Config.PeerStats,
// the other members'), the pack cache, the front's pools, the jobs. It
// keeps the latest sample and a ring of counters covering Config.Window
// (15 minutes) in memory, from which the charts are drawn, and a bounded
// timeline of membership and raft events.
//
// # Live updates
//
// Each page opens one EventSource on /ui/events?page=NAME. After each
// sample the node renders each page's live part once per kind of viewer
// (administrator or not) that has a stream open, and hands the same bytes
// to every stream of that kind. A stream holds a few messages; a browser
// that falls behind further is dropped (its EventSource reconnects), and a
// write blocked for Config.WriteTimeout ends the stream, so a slow browser
// costs a bounded amount of memory. Streams are bounded in number
// (Config.MaxStreams). The pages work without JavaScript; they are then
// as fresh as their last load.
//
// # Login
//
// The dashboard has its own login form, checked by the same authenticator
// as the REST API's Basic credentials, and a session cookie (HttpOnly,
// SameSite=Strict, Secure under TLS). Sessions live in the node's memory:
// bounded in number (Config.MaxSessions, and per user), they expire after
// Config.IdleTimeout without a request and Config.MaxAge after the login,
// and they are per node (a login on one node is not one on another).
// Every POST carries the session's CSRF token (the login form a token of
// its own, double-submitted in a cookie). Reading a page needs a logged-in
// user; the jobs' actions and the store browser need an administrator
// (403 otherwise).
package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/httperr"
	"github.com/shoal-dev/shoal/internal/nodestats"
	"github.com/shoal-dev/shoal/scheduler"
)

// Prefix is where the dashboard is mounted.
const Prefix = "/ui/"

// EventsPath is the Server-Sent Events route. It answers a long-lived
// stream, so the node serves it outside the front's pools (a stream would
// hold a web slot, and a drain would wait for it); it checks the session
// itself.
const EventsPath = "/ui/events"

//go:embed templates/*.html static/*
var files embed.FS

// Config configures the dashboard.
type Config struct {
	// Node, Store and Stats are the node's parts (required). Stats is read
	// at each sample, so its optional fields may be filled later.
	Node  *cluster.Node
	Store *cp.Store
	Stats *nodestats.Sources
	// Scheduler is the node's scheduler (nil: no jobs page data).
	Scheduler *scheduler.Scheduler
	// Authenticate checks a username and password (or access token) as
	// the REST API's Basic credentials are checked. Required.
	Authenticate func(ctx context.Context, user, secret string) (gitfront.Principal, error)
	// Logins bounds password guessing through the login form, with the
	// front's bounds (nil: not bounded).
	Logins *gitfront.LoginGuard
	// PeerStats reads another member's counters (nil: this node's only).
	PeerStats func(ctx context.Context, m cluster.Member) (nodestats.Stats, error)
	// Version is the node's build version.
	Version string
	// Started is when the node started (zero: New's time).
	Started time.Time

	// Interval is the sampling period (default 5 s); Window how long the
	// charts reach back (default 15 min).
	Interval, Window time.Duration
	// MaxStreams bounds the open event streams (default 256);
	// StreamBuffer the messages a stream may fall behind before it is
	// dropped (default 4); WriteTimeout how long one write to a browser
	// may block (default 10 s).
	MaxStreams, StreamBuffer int
	WriteTimeout             time.Duration
	// MaxSessions bounds the sessions (default 1024) and MaxUserSessions
	// one user's (default 16): past them the least recently used goes.
	// IdleTimeout (default 1 h) and MaxAge (default 12 h) expire them.
	MaxSessions, MaxUserSessions int
	IdleTimeout, MaxAge          time.Duration
	// PeerTimeout bounds a PeerStats call (default 1 s).
	PeerTimeout time.Duration

	Logger *slog.Logger
}

func (c *Config) fill() error {
	if c.Node == nil || c.Store == nil || c.Stats == nil || c.Authenticate == nil {
		return errors.New("ui: Config needs Node, Store, Stats and Authenticate")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Interval, 5*time.Second)
	def(&c.Window, 15*time.Minute)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.IdleTimeout, time.Hour)
	def(&c.MaxAge, 12*time.Hour)
	def(&c.PeerTimeout, time.Second)
	defInt(&c.MaxStreams, 256)
	defInt(&c.StreamBuffer, 4)
	defInt(&c.MaxSessions, 1024)
	defInt(&c.MaxUserSessions, 16)
	if c.Window < c.Interval {
		return fmt.Errorf("ui: Window %v is shorter than Interval %v", c.Window, c.Interval)
	}
	if c.Started.IsZero() {
		c.Started = time.Now()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// UI is a node's dashboard. Mount its routes, and Close it when the node
// stops.
type UI struct {
	cfg      Config
	log      *slog.Logger
	pages    map[string]*template.Template
	static   http.Handler
	staticFS fs.FS
	sessions *sessions
	hub      *hub
	sampler  *sampler
	// sessionCookie and loginCookie name the cookies (cookieNames).
	sessionCookie, loginCookie string

	done     chan struct{}
	startMu  sync.Mutex
	started  bool
	stopped  bool
	closeMu  sync.Once
	wg       sync.WaitGroup
	eventSub *cluster.Subscription
}

// New makes the dashboard; Start starts it.
func New(cfg Config) (*UI, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	staticFS, err := fs.Sub(files, "static")
	if err != nil {
		return nil, err
	}
	u := &UI{cfg: cfg, log: cfg.Logger, pages: pages, done: make(chan struct{}),
		static:   http.StripPrefix(Prefix+"static/", http.FileServerFS(staticFS)),
		staticFS: staticFS,
		sessions: newSessions(cfg.MaxSessions, cfg.MaxUserSessions, cfg.IdleTimeout, cfg.MaxAge),
		hub:      newHub(cfg.MaxStreams, cfg.StreamBuffer),
	}
	u.sampler = newSampler(u)
	u.sessionCookie, u.loginCookie = cookieNames(cfg.Node.Name())
	return u, nil
}

// Start starts the sampler and the reader of membership events, once the
// parts that Config.Stats names are filled in. Call it once.
func (u *UI) Start() {
	u.startMu.Lock()
	defer u.startMu.Unlock()
	if u.started || u.stopped {
		return
	}
	u.started = true
	u.eventSub = u.cfg.Node.Subscribe()
	u.wg.Add(2)
	go func() { defer u.wg.Done(); u.sampler.loop() }()
	go func() { defer u.wg.Done(); u.watchMembers() }()
}

// Close stops the sampler, ends every event stream and waits for the
// dashboard's goroutines. Safe to call twice.
func (u *UI) Close() {
	u.closeMu.Do(func() {
		u.startMu.Lock()
		u.stopped = true
		u.startMu.Unlock()
		close(u.done)
		if u.eventSub != nil {
			u.eventSub.Close()
		}
		u.hub.close()
	})
	u.wg.Wait()
}

// Refresh samples now and sends each watched page's update, as the
// sampler does at each tick.
func (u *UI) Refresh() { u.sampler.sampleAndPublish() }

// Streams is the number of open event streams.
func (u *UI) Streams() int { return u.hub.count() }

// EndStreams ends every open event stream (the browsers reconnect to
// another node or later) without stopping the dashboard: the node calls
// it when its HTTP server shuts down, which waits for every request.
func (u *UI) EndStreams() { u.hub.close() }

// watchMembers records membership events in the timeline and samples at
// once, so a failure shows without waiting for the next tick.
func (u *UI) watchMembers() {
	for {
		select {
		case <-u.done:
			return
		case e, ok := <-u.eventSub.C():
			if !ok {
				return
			}
			u.sampler.addEvent(Event{At: time.Now(), Kind: e.Type.String(), Member: e.Member.Name,
				Text: memberEventText(e)})
			u.sampler.kick()
		}
	}
}

func memberEventText(e cluster.Event) string {
	switch e.Type {
	case cluster.EventJoin:
		return e.Member.Name + " joined"
	case cluster.EventLeave:
		return e.Member.Name + " left"
	case cluster.EventFail:
		return e.Member.Name + " failed"
	case cluster.EventUpdate:
		return e.Member.Name + " updated its metadata"
	}
	return e.Member.Name + ": " + e.Type.String()
}

// Mount registers the dashboard's routes on mux.
func (u *UI) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"cluster", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"cluster", http.StatusSeeOther)
	})
	mux.Handle("GET /ui/static/", u.staticHandler())
	mux.HandleFunc("GET /ui/login", u.loginForm)
	mux.HandleFunc("POST /ui/login", u.login)
	mux.HandleFunc("POST /ui/logout", u.withSession(u.logout))
	mux.HandleFunc("GET "+EventsPath, u.events)
	for _, p := range pageNames {
		mux.HandleFunc("GET /ui/"+p, u.withSession(u.page(p)))
	}
	mux.HandleFunc("POST /ui/jobs/{id}/{action}", u.withSession(u.jobAction))
}

func (u *UI) staticHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		// Only the files there are: anything else (a directory, a name
		// fs.FS refuses, which the file server would answer 500) is 404.
		name := strings.TrimPrefix(r.URL.Path, Prefix+"static/")
		if st, err := fs.Stat(u.staticFS, name); !fs.ValidPath(name) || err != nil || st.IsDir() {
			httperr.Write(w, http.StatusNotFound, "no such file")
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		u.static.ServeHTTP(w, r)
	})
}

// securityHeaders keeps the pages to their own origin: no external or
// inline script or style, no framing.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}
