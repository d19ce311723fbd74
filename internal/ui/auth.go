package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/gitfront"
)

// maxFormBody bounds a form's body.
const maxFormBody = 16 << 10

// withSession passes on requests from a logged-in browser: a GET without
// a session is sent to the login form; a POST without one is refused
// (401), and a POST must carry the session's CSRF token and, if the
// browser says where it comes from, this origin (403 otherwise).
func (u *UI) withSession(h func(w http.ResponseWriter, r *http.Request, sess *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Cookie(u.sessionCookie)
		var sess *session
		if c != nil {
			sess = u.sessions.get(c.Value)
		}
		if sess == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			u.errorPage(w, nil, http.StatusUnauthorized, errSessionGone.Error())
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
			if err := r.ParseForm(); err != nil {
				u.errorPage(w, sess, formStatus(err), "unreadable form: "+err.Error())
				return
			}
			if !sameOrigin(r) || !sameToken(r.PostForm.Get("csrf"), sess.csrf) {
				u.errorPage(w, sess, http.StatusForbidden, "The form's security token is missing or stale: reload the page and try again.")
				return
			}
		}
		h(w, r, sess)
	}
}

// formStatus is the status of a form that could not be read: 413 past
// maxFormBody, 400 otherwise.
func formStatus(err error) int {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// sameOrigin reports whether the request's Origin (or, lacking it, its
// Referer) is this host, when the browser sent either.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		o = r.Header.Get("Referer")
		if o == "" {
			return true
		}
	}
	p, err := url.Parse(o)
	return err == nil && p.Host == r.Host
}

// safeNext is where to go after the login: a dashboard path, else the
// cluster page.
func safeNext(next string) string {
	if strings.HasPrefix(next, Prefix) && !strings.HasPrefix(next, "//") && !strings.ContainsAny(next, "\\\r\n") &&
		!strings.HasPrefix(next, Prefix+"login") && !strings.HasPrefix(next, EventsPath) {
		return next
	}
	return Prefix + "cluster"
}

type loginView struct {
	Next, User string
}

// loginForm shows the login form with a fresh token in a cookie and a
// hidden field.
func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if c, _ := r.Cookie(u.sessionCookie); c != nil && u.sessions.get(c.Value) != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	u.showLogin(w, r, http.StatusOK, next, "", "")
}

func (u *UI) showLogin(w http.ResponseWriter, r *http.Request, status int, next, user, problem string) {
	token := randomToken()
	http.SetCookie(w, &http.Cookie{Name: u.loginCookie, Value: token, Path: Prefix + "login", MaxAge: 3600,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	d := u.data("login", gitfront.Principal{}, token, nil)
	d.Error = problem
	d.V = loginView{Next: next, User: user}
	u.render(w, status, d)
}

// login checks the form's credentials with the node's authenticator and
// starts a session.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		u.showLogin(w, r, formStatus(err), Prefix+"cluster", "", "The form could not be read.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	user, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	c, _ := r.Cookie(u.loginCookie)
	if c == nil || !sameToken(c.Value, r.PostForm.Get("csrf")) || !sameOrigin(r) {
		u.showLogin(w, r, http.StatusForbidden, next, user, "The login form expired; please try again.")
		return
	}
	if user == "" || pass == "" || len(user) > 1024 || len(pass) > 1024 {
		u.showLogin(w, r, http.StatusBadRequest, next, user, "Enter a username and a password (or access token).")
		return
	}
	done := func(bool) {}
	if g := u.cfg.Logins; g != nil {
		end, ref, refused := g.Begin(user, r.RemoteAddr)
		if refused {
			secs := int((ref.RetryAfter + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			u.showLogin(w, r, http.StatusTooManyRequests, next, user,
				fmt.Sprintf("Too many failed logins; try again in %d s.", secs))
			return
		}
		done = end
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p, err := u.cfg.Authenticate(ctx, user, pass)
	done(errors.Is(err, gitfront.ErrBadCredentials))
	switch {
	case err == nil && p.Anonymous():
		err = errors.New("the authenticator named no user")
		fallthrough
	case err != nil && !errors.Is(err, gitfront.ErrBadCredentials) && !errors.Is(err, gitfront.ErrAuthBusy):
		u.log.Error("ui: login unavailable", "user", user, "remote", r.RemoteAddr, "err", err)
		w.Header().Set("Retry-After", "5")
		u.showLogin(w, r, http.StatusServiceUnavailable, next, user, "Logins are unavailable right now; try again shortly.")
		return
	case errors.Is(err, gitfront.ErrAuthBusy):
		u.log.Warn("ui: login busy", "user", user, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "2")
		u.showLogin(w, r, http.StatusServiceUnavailable, next, user, "Too many logins at once; try again in a moment.")
		return
	case err != nil:
		u.log.Warn("ui: failed login", "user", user, "remote", r.RemoteAddr)
		u.showLogin(w, r, http.StatusUnauthorized, next, user, "Invalid username or password.")
		return
	}
	cookie, _ := u.sessions.create(p)
	u.log.Info("ui: login", "user", p.Name, "admin", p.Admin, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: u.loginCookie, Value: "", Path: Prefix + "login", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.SetCookie(w, &http.Cookie{Name: u.sessionCookie, Value: cookie, Path: Prefix,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the session.
func (u *UI) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if c, _ := r.Cookie(u.sessionCookie); c != nil {
		u.sessions.remove(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: u.sessionCookie, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	u.log.Info("ui: logout", "user", sess.user.Name)
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}
