package chaos

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shoal-dev/shoal/internal/httpc"
)

// Operation kinds, for counts and error windows.
const (
	opPRUpdate   = "pr-update"
	opComment    = "comment-add"
	opPRRead     = "pr-read"
	opCommentsRd = "comments-read"
	opKVGet      = "kv-get"
	opKVPut      = "kv-put"
	opKVCAS      = "kv-cas"
	opGitPush    = "git-push"
	opGitRead    = "git-refs-read"
)

// opAbandoned ends the kind of a write whose client gave up on it
// (LoadParameters.Abandon): counted apart, and always ok — the client
// chose not to know.
const opAbandoned = "-abandoned"

// opConflictAfterAbandoned ends the kind of a pull request update that met
// 409 right after one of the same pull request was abandoned: that update
// applied after all, after the writer read the version back. Counted
// apart, and ok.
const opConflictAfterAbandoned = "-409-after-abandoned"

// OpCount counts one kind of operation.
type OpCount struct {
	OK     int `json:"ok"`
	Failed int `json:"failed"` // errors, timeouts, 5xx: outcome unknown for writes
}

// OpCounts are per kind.
type OpCounts map[string]*OpCount

// Total is the number of operations of every kind.
func (c OpCounts) Total() int {
	n := 0
	for _, v := range c {
		n += v.OK + v.Failed
	}
	return n
}

// event is one operation, for the error windows.
type event struct {
	kind       string
	node       int
	start, end time.Time
	ok         bool
	why        string // a failed one's error, classified (failure)
}

// failure classifies a failed operation's answer for the error windows:
// the status and error message of an HTTP answer, or the client's error,
// with addresses and numbers masked so that like failures count together
// ("503: l2cache: the cache mode changed during the write: written under
// local→distributed dual (epoch N), …", "Put: context deadline exceeded
// (Client.Timeout exceeded while awaiting headers)").
func failure(code int, body []byte, err error) string {
	var msg, status string
	switch {
	case err != nil:
		var ue *url.Error
		if errors.As(err, &ue) {
			msg = ue.Op + ": " + ue.Err.Error()
		} else {
			msg = err.Error()
		}
	default:
		m := httpc.ErrorMessage(body)
		if m == "" {
			m = strings.TrimSpace(string(body[:min(len(body), 160)]))
		}
		status, msg = fmt.Sprintf("%d: ", code), m
	}
	msg = strings.Join(strings.Fields(msg), " ")
	msg = addrRE.ReplaceAllString(msg, "ADDR")
	msg = numRE.ReplaceAllString(msg, "N")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return status + msg
}

var (
	addrRE = regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`)
	numRE  = regexp.MustCompile(`\b\d+(\.\d+)?(ms|s|µs)?\b`)
)

// prAck is an acknowledged pull request update.
type prAck struct {
	version int64
	title   string
	at      time.Time
	node    int
}

// commentAck is an acknowledged comment.
type commentAck struct {
	text string
	at   time.Time
	node int
}

// staleSample is a read that missed an acknowledged write in a setting
// without the never-stale promise.
type staleSample struct {
	missedAt, start time.Time
	v               Violation
}

// strictChange is a change of the promise (Env.SetStrict).
type strictChange struct {
	at     time.Time
	strict bool
}

// recorder holds a setting's history and judges reads as they complete.
type recorder struct {
	start time.Time

	mu         sync.Mutex
	counts     OpCounts
	events     []event
	prs        map[int64][]prAck
	comments   map[int64][]commentAck
	strict     []strictChange
	violations []Violation
	kv         []porcupine.Operation
	// LOCAL async reads that missed an acknowledged write
	stale []staleSample
	reads int
}

func newRecorder(strict bool, prs []int64) *recorder {
	r := &recorder{start: time.Now(), counts: OpCounts{}, prs: map[int64][]prAck{}, comments: map[int64][]commentAck{}}
	r.strict = []strictChange{{at: r.start, strict: strict}}
	for _, pr := range prs {
		r.prs[pr] = nil
		r.comments[pr] = nil
	}
	return r
}

func (r *recorder) trackedPRs() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for pr := range r.prs {
		out = append(out, pr)
	}
	sort.Slice(out, func(a, b int) bool { return out[a] < out[b] })
	return out
}

func (r *recorder) setStrict(at time.Time, strict bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.strict = append(r.strict, strictChange{at: at, strict: strict})
}

// strictThroughout says whether the promise was strict from a to b.
func (r *recorder) strictThroughout(a, b time.Time) bool {
	in := true
	for i, c := range r.strict {
		next := time.Time{}
		if i+1 < len(r.strict) {
			next = r.strict[i+1].at
		}
		if !next.IsZero() && !next.After(a) {
			continue // ended before a
		}
		if c.at.After(b) {
			break
		}
		in = in && c.strict
	}
	return in
}

// op records one operation's outcome: why is a failed one's error
// (failure), empty for one that succeeded.
func (r *recorder) op(kind string, node int, start, end time.Time, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opLocked(kind, node, start, end, why == "", why)
}

func (r *recorder) opLocked(kind string, node int, start, end time.Time, ok bool, why string) {
	c := r.counts[kind]
	if c == nil {
		c = &OpCount{}
		r.counts[kind] = c
	}
	if ok {
		c.OK++
	} else {
		c.Failed++
	}
	r.events = append(r.events, event{kind: kind, node: node, start: start, end: end, ok: ok, why: why})
}

func (r *recorder) violation(v Violation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violations = append(r.violations, v)
}

// ackPR records an acknowledged update. Its time is taken under the lock,
// after the answer arrived: a read that starts later started after the
// acknowledgement.
func (r *recorder) ackPR(pr int64, version int64, title string, node int, start time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.opLocked(opPRUpdate, node, start, now, true, "")
	r.prs[pr] = append(r.prs[pr], prAck{version: version, title: title, at: now, node: node})
}

func (r *recorder) ackComment(pr int64, text string, node int, start time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.opLocked(opComment, node, start, now, true, "")
	r.comments[pr] = append(r.comments[pr], commentAck{text: text, at: now, node: node})
}

func (r *recorder) ms(t time.Time) string {
	return fmt.Sprintf("t=%.3fs", t.Sub(r.start).Seconds())
}

// stale judges a read that missed an acknowledged write: a violation if
// the promise was strict from the acknowledgement to the read's start,
// else a staleness sample, judged against the async bound once the fault
// windows are known (judgeStale). Called with r.mu.
func (r *recorder) staleLocked(check string, missedAt, start time.Time, v Violation) {
	if r.strictThroughout(missedAt, start) {
		v.Check = check
		r.violations = append(r.violations, v)
		return
	}
	v.Check = check + " beyond the async bound"
	r.stale = append(r.stale, staleSample{missedAt: missedAt, start: start, v: v})
}

// window is a fault from its start until it was healed.
type window struct {
	kind          FaultKind
	start, healed time.Time
}

// judgeStale checks the staleness samples: a read may miss a write
// acknowledged up to AsyncBound before it began, or, when the write was
// acknowledged while a fault was in place (or within AsyncBound before
// it), until AsyncBound after the fault was healed. It returns the
// samples' lags, the largest, and the largest beyond the heal of an
// overlapping fault. Called with r.mu.
func (r *recorder) judgeStale(faults []window) (lags []time.Duration, maxLag, maxAfterHeal time.Duration, inFault int, byFault map[FaultKind]*StaleByFault) {
	byFault = map[FaultKind]*StaleByFault{}
	for _, s := range r.stale {
		lag := s.start.Sub(s.missedAt)
		lags = append(lags, lag)
		maxLag = max(maxLag, lag)
		until := s.missedAt.Add(AsyncBound)
		var healed time.Time
		var kind FaultKind
		for _, f := range faults {
			if !s.missedAt.Before(f.start.Add(-AsyncBound)) && !s.missedAt.After(f.healed) && f.healed.After(healed) {
				healed, kind = f.healed, f.kind
			}
		}
		if !healed.IsZero() {
			inFault++
			b := byFault[kind]
			if b == nil {
				b = &StaleByFault{}
				byFault[kind] = b
			}
			b.Reads++
			b.Max = max(b.Max, lag)
			maxAfterHeal = max(maxAfterHeal, s.start.Sub(healed))
			if healed.Add(AsyncBound).After(until) {
				until = healed.Add(AsyncBound)
			}
		}
		if s.start.After(until) {
			v := s.v
			if healed.IsZero() {
				v.Detail += fmt.Sprintf(" (%v after the acknowledgement, with no fault in place; bound %v)", lag.Round(time.Millisecond), AsyncBound)
			} else {
				v.Detail += fmt.Sprintf(" (%v after the acknowledgement, %v after the fault in place then was healed; bound %v after the heal)",
					lag.Round(time.Millisecond), s.start.Sub(healed).Round(time.Millisecond), AsyncBound)
			}
			r.violations = append(r.violations, v)
		}
	}
	return lags, maxLag, maxAfterHeal, inFault, byFault
}

// StaleByFault is the stale reads of LOCAL async that missed a write
// acknowledged during one kind of fault.
type StaleByFault struct {
	Reads int           `json:"reads"`
	Max   time.Duration `json:"max_ns"`
}

// readPR judges a pull request read through node that started at start
// and returned version and title.
func (r *recorder) readPR(pr int64, node int, start, end time.Time, version int64, title string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opLocked(opPRRead, node, start, end, true, "")
	r.reads++
	acks := r.prs[pr]
	// acks are in version order (one writer per pull request), and so in
	// acknowledgement order.
	n := sort.Search(len(acks), func(i int) bool { return !acks[i].at.Before(start) }) // acks[:n] were acknowledged before start
	if k := sort.Search(len(acks), func(i int) bool { return acks[i].version >= version }); k < len(acks) {
		if a := acks[k]; a.version == version && a.title != title {
			r.violations = append(r.violations, Violation{Check: "wrong content", Node: node,
				Detail: fmt.Sprintf("pull request %d version %d read with title %q; the acknowledged update wrote %q", pr, version, title, a.title),
				Ops: []string{fmt.Sprintf("update pr %d -> v%d %q via node%d, acked %s", pr, a.version, a.title, a.node, r.ms(a.at)),
					fmt.Sprintf("read pr %d via node%d %s..%s -> v%d %q", pr, node, r.ms(start), r.ms(end), version, title)}})
		}
	}
	if n == 0 || acks[n-1].version <= version {
		return
	}
	// the first acknowledged update the read missed
	first := sort.Search(n, func(i int) bool { return acks[i].version > version })
	missed := acks[first]
	last := acks[n-1]
	r.staleLocked("stale read", missed.at, start, Violation{Node: node,
		Detail: fmt.Sprintf("pull request %d read through node%d returned version %d, but version %d was acknowledged %v before the read began",
			pr, node, version, last.version, start.Sub(missed.at).Round(time.Millisecond)),
		Ops: []string{
			fmt.Sprintf("update pr %d -> v%d via node%d, acked %s", pr, missed.version, missed.node, r.ms(missed.at)),
			fmt.Sprintf("update pr %d -> v%d via node%d, acked %s (latest before the read)", pr, last.version, last.node, r.ms(last.at)),
			fmt.Sprintf("read pr %d via node%d %s..%s -> v%d", pr, node, r.ms(start), r.ms(end), version),
		}})
}

// readComments judges a comment list read: texts are the chaos comments
// it held.
func (r *recorder) readComments(pr int64, node int, start, end time.Time, texts map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opLocked(opCommentsRd, node, start, end, true, "")
	r.reads++
	acks := r.comments[pr]
	n := sort.Search(len(acks), func(i int) bool { return !acks[i].at.Before(start) })
	var missing []commentAck
	for _, a := range acks[:n] {
		if !texts[a.text] {
			missing = append(missing, a)
		}
	}
	if len(missing) == 0 {
		return
	}
	m := missing[0]
	ops := []string{fmt.Sprintf("add comment %q to pr %d via node%d, acked %s", m.text, pr, m.node, r.ms(m.at)),
		fmt.Sprintf("read comments of pr %d via node%d %s..%s -> %d chaos comments, %d acknowledged ones missing", pr, node, r.ms(start), r.ms(end), len(texts), len(missing))}
	r.staleLocked("stale comment list", m.at, start, Violation{Node: node,
		Detail: fmt.Sprintf("comments of pull request %d read through node%d miss %d acknowledged comment(s), the first acknowledged %v before the read began",
			pr, node, len(missing), start.Sub(m.at).Round(time.Millisecond)),
		Ops: ops})
}

// kvOp records a kv operation for the linearizability check.
func (r *recorder) kvOp(kind string, node, client int, in kvInput, out kvOutput, start, end time.Time, known bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opLocked(kind, node, start, end, known, why)
	ret := end.Sub(r.start).Nanoseconds()
	if !known {
		if in.Op == kvGet {
			return // a read with no answer changed nothing
		}
		out = kvOutput{Unknown: true}
		ret = 1<<63 - 1 // an open call: it may take effect at any later point, or never
	}
	r.kv = append(r.kv, porcupine.Operation{ClientId: client, Input: in, Output: out,
		Call: start.Sub(r.start).Nanoseconds(), Return: ret})
}

// kvOpen records a write cut off by the end of the load as an open call.
func (r *recorder) kvOpen(client int, in kvInput, start time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kv = append(r.kv, porcupine.Operation{ClientId: client, Input: in, Output: kvOutput{Unknown: true},
		Call: start.Sub(r.start).Nanoseconds(), Return: 1<<63 - 1})
}
