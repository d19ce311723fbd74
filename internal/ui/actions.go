package ui

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shoal-dev/shoal/cluster/cp"
	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/scheduler"
)

// jobActions are what an administrator may do to a job, and what the
// page says once done.
var jobActions = map[string]string{"pause": "paused", "resume": "resumed", "run": "asked to run now"}

// jobAction pauses, resumes or runs a job now (administrators).
func (u *UI) jobAction(w http.ResponseWriter, r *http.Request, sess *session) {
	if !sess.user.Admin {
		u.forbidden(w, sess, "Only administrators may pause, resume or run jobs.")
		return
	}
	id, action := r.PathValue("id"), r.PathValue("action")
	if _, ok := jobActions[action]; !ok {
		u.errorPage(w, sess, http.StatusNotFound, fmt.Sprintf("There is no job action %q.", action))
		return
	}
	if u.cfg.Scheduler == nil {
		u.errorPage(w, sess, http.StatusServiceUnavailable, "This node runs no scheduler.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var err error
	switch action {
	case "pause":
		err = u.cfg.Scheduler.Pause(ctx, id)
	case "resume":
		err = u.cfg.Scheduler.Resume(ctx, id)
	case "run":
		err = u.cfg.Scheduler.RunNow(ctx, id)
	}
	switch {
	case errors.Is(err, scheduler.ErrNotFound):
		u.errorPage(w, sess, http.StatusNotFound, fmt.Sprintf("There is no job %q.", id))
		return
	case errors.Is(err, scheduler.ErrNoRunner):
		u.errorPage(w, sess, http.StatusConflict, err.Error())
		return
	case err != nil:
		u.log.Warn("ui: job action failed", "job", id, "action", action, "user", sess.user.Name, "err", err)
		u.errorPage(w, sess, http.StatusServiceUnavailable, fmt.Sprintf("Could not %s job %q: %v", action, id, err))
		return
	}
	u.log.Info("ui: job action", "job", id, "action", action, "user", sess.user.Name)
	u.sampler.sampleAndPublish() // every open page shows it now
	http.Redirect(w, r, Prefix+"jobs?"+url.Values{"job": {id}, "done": {action}}.Encode(), http.StatusSeeOther)
}

// jobFlash is the message after an action ("" if none).
func jobFlash(r *http.Request) string {
	q := r.URL.Query()
	done, ok := jobActions[q.Get("done")]
	if !ok || q.Get("job") == "" {
		return ""
	}
	return fmt.Sprintf("Job %q %s.", q.Get("job"), done)
}

// ---- the store browser ----

// storeLimit bounds the keys one store page lists; valueLimit the bytes
// of one value it shows.
const (
	storeLimit   = 500
	valueLimit   = 64 << 10
	previewChars = 120
)

type storeView struct {
	Prefix string
	Crumbs []crumb
	Dirs   []storeDir
	Keys   []storeKey
	More   int
	Stale  bool
	Err    string
	// Key is the key shown whole (?key=), if any.
	Key *storeKey
}

type crumb struct{ Name, Prefix string }

type storeDir struct {
	Name, Prefix string
	Count        int
}

type storeKey struct {
	Key, Preview string
	Version      uint64
	Size         int
	Binary       bool
	Value        string
	Truncated    bool
}

// storeView lists the keys under ?prefix= one level at a time (deeper
// keys folded into their next segment), or shows ?key= whole. It reads
// linearizably, or this node's replica if the leader cannot be reached.
func (u *UI) storeView(r *http.Request) storeView {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	v := storeView{Prefix: prefix}
	v.Crumbs = append(v.Crumbs, crumb{Name: "(all keys)", Prefix: ""})
	acc := ""
	for _, part := range strings.SplitAfter(prefix, "/") {
		if part == "" {
			continue
		}
		acc += part
		v.Crumbs = append(v.Crumbs, crumb{Name: part, Prefix: acc})
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if key := q.Get("key"); key != "" {
		kv, err := u.cfg.Store.Get(ctx, key)
		if err != nil && !errors.Is(err, cp.ErrNotFound) {
			kv, err = u.cfg.Store.StaleGet(key)
			v.Stale = true
		}
		if errors.Is(err, cp.ErrNotFound) {
			v.Err = fmt.Sprintf("There is no key %q.", key)
			return v
		}
		if err != nil {
			v.Err = err.Error()
			return v
		}
		k := describe(kv, valueLimit)
		v.Key = &k
		return v
	}
	kvs, err := u.cfg.Store.List(ctx, prefix)
	if err != nil {
		kvs, v.Stale = u.cfg.Store.StaleList(prefix), true
	}
	dirs := map[string]int{}
	var order []string
	for _, kv := range kvs {
		rest := strings.TrimPrefix(kv.Key, prefix)
		if i := strings.Index(rest, "/"); i >= 0 && i < len(rest)-1 {
			d := rest[:i+1]
			if dirs[d] == 0 {
				order = append(order, d)
			}
			dirs[d]++
			continue
		}
		if len(v.Keys) >= storeLimit {
			v.More++
			continue
		}
		v.Keys = append(v.Keys, describe(kv, previewChars))
	}
	for _, d := range order {
		v.Dirs = append(v.Dirs, storeDir{Name: d, Prefix: prefix + d, Count: dirs[d]})
	}
	return v
}

// describe shows a value as text when it is UTF-8 without control
// characters other than whitespace, else as hex; at most limit bytes.
func describe(kv cp.KV, limit int) storeKey {
	k := storeKey{Key: kv.Key, Version: kv.Version, Size: len(kv.Value)}
	b := kv.Value
	if len(b) > limit {
		b, k.Truncated = b[:limit], true
		for i := 0; i < utf8.UTFMax-1 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1] // not in the middle of a character
		}
	}
	if isText(b) {
		k.Value = string(b)
	} else {
		k.Binary = true
		k.Value = hexDump(b)
	}
	k.Preview = k.Value
	if limit == previewChars {
		k.Preview = strings.Join(strings.Fields(k.Preview), " ")
	}
	return k
}

func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

func hexDump(b []byte) string {
	var s strings.Builder
	for i := 0; i < len(b); i += 16 {
		end := min(i+16, len(b))
		fmt.Fprintf(&s, "%08x ", i)
		for j := i; j < i+16; j++ {
			if j < end {
				fmt.Fprintf(&s, " %02x", b[j])
			} else {
				s.WriteString("   ")
			}
		}
		s.WriteString("  ")
		for _, c := range b[i:end] {
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			s.WriteByte(c)
		}
		s.WriteByte('\n')
	}
	return s.String()
}

// ---- template helpers ----

var funcs = template.FuncMap{
	"human": human,
	"since": since,
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"num":      num,
	"bytes":    byteSize,
	"pct":      func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) + " %" },
	"add":      func(a, b int) int { return a + b },
	"schedule": scheduleText,
	"meanWait": func(ps gitfront.PoolStats) time.Duration {
		if ps.Served == 0 {
			return 0
		}
		return ps.WaitTime / time.Duration(ps.Served)
	},
	"storeURL": func(prefix string) string {
		return Prefix + "store?" + url.Values{"prefix": {prefix}}.Encode()
	},
	"keyURL": func(key string) string {
		return Prefix + "store?" + url.Values{"key": {key}}.Encode()
	},
	"jobURL": func(id, action string) string {
		return Prefix + "jobs/" + url.PathEscape(id) + "/" + action
	},
}

// scheduleText is a schedule as people say it: an interval on the fixed
// grid from the Unix epoch (the built-in jobs') is just "every 30s".
func scheduleText(s scheduler.Schedule) string {
	if s.Kind == scheduler.KindInterval && s.First.Equal(time.Unix(0, 0)) {
		return "every " + s.Every.String()
	}
	return s.String()
}

// human writes a duration briefly: 45s, 3m12s, 2h05m, 3d4h.
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// num writes an integer with thin separators: 1 234 567.
func num(v any) string {
	var s string
	switch n := v.(type) {
	case uint64:
		s = strconv.FormatUint(n, 10)
	case int64:
		s = strconv.FormatInt(n, 10)
	case int:
		s = strconv.Itoa(n)
	default:
		return fmt.Sprint(v)
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString("\u202f")
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func byteSize(v any) string {
	var n float64
	switch x := v.(type) {
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case int:
		n = float64(x)
	}
	for _, u := range []string{"B", "KiB", "MiB", "GiB"} {
		if n < 1024 || u == "GiB" {
			if u == "B" {
				return strconv.FormatFloat(n, 'f', 0, 64) + " B"
			}
			return strconv.FormatFloat(n, 'f', 1, 64) + " " + u
		}
		n /= 1024
	}
	return ""
}
