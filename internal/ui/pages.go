package ui

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/internal/httperr"
)

// pageNames are the pages, in the navigation's order.
var pageNames = []string{"cluster", "partitions", "caches", "git", "jobs", "store"}

// livePages are the pages that stream updates.
var livePages = map[string]bool{"cluster": true, "partitions": true, "caches": true, "git": true, "jobs": true}

// adminPages need an administrator to be read.
var adminPages = map[string]bool{"store": true}

var pageTitles = map[string]string{"cluster": "Cluster", "partitions": "Partitions", "caches": "Caches",
	"git": "Git", "jobs": "Jobs", "store": "Store", "login": "Log in", "error": "Error"}

// pageData is what every page's template is given.
type pageData struct {
	Page, Title string
	User        gitfront.Principal
	// CSRF is the session's token for the page's forms; empty in a live
	// update (shared by every viewer), where the script fills it in.
	CSRF  string
	Live  bool
	Nav   []navItem
	S     *Sample
	Now   time.Time
	Flash string
	Error string
	// V is the page's own view.
	V any
}

type navItem struct {
	Name, Title string
	Current     bool
}

func parseTemplates() (map[string]*template.Template, error) {
	base, err := template.New("").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/parts.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, p := range append(slices.Clone(pageNames), "login", "error") {
		t, err := base.Clone()
		if err != nil {
			return nil, err
		}
		if _, err := t.ParseFS(files, "templates/"+p+".html"); err != nil {
			return nil, err
		}
		out[p] = t
	}
	return out, nil
}

// render writes a whole page.
func (u *UI) render(w http.ResponseWriter, status int, d *pageData) {
	var buf bytes.Buffer
	if err := u.pages[d.Page].ExecuteTemplate(&buf, "layout", d); err != nil {
		u.log.Error("ui: rendering a page", "page", d.Page, "err", err)
		httperr.Write(w, http.StatusInternalServerError, "internal error rendering the page")
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// renderLive renders a page's live part for a viewer.
func (u *UI) renderLive(t topic, smp *Sample) ([]byte, error) {
	d := u.data(t.page, gitfront.Principal{Admin: t.admin}, "", smp)
	var buf bytes.Buffer
	if err := u.pages[t.page].ExecuteTemplate(&buf, "live", d); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// eventMessage is a page's live part as one Server-Sent Event.
func (u *UI) eventMessage(t topic, smp *Sample) ([]byte, error) {
	html, err := u.renderLive(t, smp)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "event: update\nid: %d\n", smp.Seq)
	for line := range strings.SplitSeq(string(html), "\n") {
		b.WriteString("data: ")
		b.WriteString(strings.TrimSuffix(line, "\r"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// data builds a page's data from a sample.
func (u *UI) data(page string, user gitfront.Principal, csrf string, smp *Sample) *pageData {
	d := &pageData{Page: page, Title: pageTitles[page], User: user, CSRF: csrf, Live: livePages[page], S: smp, Now: time.Now()}
	for _, p := range pageNames {
		if adminPages[p] && !user.Admin {
			continue
		}
		d.Nav = append(d.Nav, navItem{Name: p, Title: pageTitles[p], Current: p == page})
	}
	if smp == nil {
		return d
	}
	switch page {
	case "cluster":
		d.V = u.clusterView(smp)
	case "partitions":
		d.V = partitionsOf(smp)
	case "caches":
		d.V = u.cachesView(smp)
	case "git":
		d.V = u.gitView(smp)
	case "jobs":
		d.V = jobsView(smp)
	}
	return d
}

// page serves one of the pages.
func (u *UI) page(name string) func(w http.ResponseWriter, r *http.Request, sess *session) {
	return func(w http.ResponseWriter, r *http.Request, sess *session) {
		if adminPages[name] && !sess.user.Admin {
			u.forbidden(w, sess, "Only administrators may browse the store.")
			return
		}
		smp := u.sampler.current()
		d := u.data(name, sess.user, sess.csrf, smp)
		if name == "store" {
			d.V = u.storeView(r)
		}
		if name == "jobs" {
			d.Flash = jobFlash(r)
		}
		u.render(w, http.StatusOK, d)
	}
}

// forbidden answers 403 with a page that says why.
func (u *UI) forbidden(w http.ResponseWriter, sess *session, why string) {
	d := u.data("error", sess.user, sess.csrf, nil)
	d.Error = why
	u.render(w, http.StatusForbidden, d)
}

// errorPage answers status with a page that says why.
func (u *UI) errorPage(w http.ResponseWriter, sess *session, status int, why string) {
	var user gitfront.Principal
	csrf := ""
	if sess != nil {
		user, csrf = sess.user, sess.csrf
	}
	d := u.data("error", user, csrf, nil)
	d.Error = why
	u.render(w, status, d)
}

// events serves a page's Server-Sent Events stream.
func (u *UI) events(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Cookie(u.sessionCookie)
	var cookie string
	if c != nil {
		cookie = c.Value
	}
	sess := u.sessions.get(cookie)
	if sess == nil {
		httperr.Write(w, http.StatusUnauthorized, "log in first")
		return
	}
	page := r.URL.Query().Get("page")
	if !livePages[page] {
		httperr.Write(w, http.StatusBadRequest, fmt.Sprintf("no live updates for page %q", page))
		return
	}
	st, err := u.hub.open(topic{page: page, admin: sess.user.Admin})
	if err != nil {
		w.Header().Set("Retry-After", "10")
		httperr.Write(w, http.StatusServiceUnavailable, strings.TrimPrefix(err.Error(), "ui: ")+"; retry later")
		return
	}
	defer u.hub.remove(st)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	first, err := u.eventMessage(st.t, u.sampler.current())
	if err != nil {
		u.log.Warn("ui: rendering a live update", "page", page, "err", err)
		return
	}
	write := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(u.cfg.WriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(append([]byte("retry: 3000\n\n"), first...)) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-st.gone:
			return
		case <-u.done:
			return
		case msg := <-st.ch:
			if !u.sessions.valid(cookie, sess) {
				write([]byte("event: expired\ndata: log in again\n\n"))
				return
			}
			if !write(msg) {
				return
			}
		}
	}
}

// ---- the pages' views ----

type clusterView struct {
	Alive, Total int
	Members      []memberRow
	Events       []Event
	Uptime       time.Duration
}

type memberRow struct {
	cluster.Member
	RaftRole string
	Self     bool
	Uptime   time.Duration // 0: unknown
}

func (u *UI) clusterView(smp *Sample) clusterView {
	v := clusterView{Total: len(smp.Members), Uptime: smp.At.Sub(smp.Started)}
	started := map[string]time.Time{}
	for _, n := range smp.Nodes {
		if n.Err == "" && n.Stats.Process.Started != (time.Time{}) {
			started[n.Name] = n.Stats.Process.Started
		}
	}
	for _, m := range smp.Members {
		if m.State == cluster.StateAlive {
			v.Alive++
		}
		row := memberRow{Member: m, RaftRole: smp.Raft.Servers[m.Name], Self: m.Name == smp.Self}
		if m.Name == smp.Raft.Leader {
			row.RaftRole = "leader"
		}
		if row.Self {
			row.Uptime = v.Uptime
		} else if t, ok := started[m.Name]; ok && m.State == cluster.StateAlive {
			row.Uptime = smp.At.Sub(t)
		}
		v.Members = append(v.Members, row)
	}
	for i := len(smp.Events) - 1; i >= 0 && len(v.Events) < 50; i-- {
		v.Events = append(v.Events, smp.Events[i])
	}
	return v
}

// errSessionGone is why an action without a live session is refused.
var errSessionGone = errors.New("your session has expired; log in again")
