package chaos

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const api = "/rest/api/1.0"

// tracked is the data the workload writes: pull requests by path.
type tracked struct {
	prs  []int64
	path map[int64]string // pull request → its REST path
}

// pickTracked lists the pull requests of every repository of the seed.
func (e *Env) pickTracked(ctx context.Context) (*tracked, error) {
	t := &tracked{path: map[int64]string{}}
	var projects struct{ Values []struct{ Key string } }
	if err := e.getJSON(ctx, 1, api+"/projects?limit=1000", &projects); err != nil {
		return nil, err
	}
	for _, p := range projects.Values {
		var repos struct{ Values []struct{ Slug string } }
		if err := e.getJSON(ctx, 1, api+"/projects/"+p.Key+"/repos?limit=1000", &repos); err != nil {
			return nil, err
		}
		for _, r := range repos.Values {
			base := fmt.Sprintf("%s/projects/%s/repos/%s", api, p.Key, r.Slug)
			var prs struct{ Values []struct{ ID int64 } }
			if err := e.getJSON(ctx, 1, base+"/pull-requests?state=ALL&limit=1000", &prs); err != nil {
				return nil, err
			}
			for _, pr := range prs.Values {
				t.prs = append(t.prs, pr.ID)
				t.path[pr.ID] = fmt.Sprintf("%s/pull-requests/%d", base, pr.ID)
			}
		}
	}
	if len(t.prs) < 4 {
		return nil, fmt.Errorf("the seed has %d pull requests, want at least 4", len(t.prs))
	}
	return t, nil
}

func (e *Env) getJSON(ctx context.Context, i int, path string, v any) error {
	code, body, err := doReq(ctx, e.probe, http.MethodGet, "http://"+e.HTTP(i)+path, nil, true)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("node%d GET %s: %d %s", i, path, code, body)
	}
	return json.Unmarshal(body, v)
}

// workload runs the clients until ctx ends.
type workload struct {
	e    *Env
	t    *tracked
	rec  *recorder
	db   *sql.DB
	load LoadParameters
	seed uint64
}

func (w *workload) run(ctx context.Context) {
	var wg sync.WaitGroup
	var ids atomic.Uint64
	goN := func(n int, f func(ctx context.Context, k int, rng *rand.Rand)) {
		for k := 0; k < n; k++ {
			rng := rand.New(rand.NewPCG(w.seed, ids.Add(1)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				f(ctx, k, rng)
			}()
		}
	}
	goN(w.load.PRWriters, func(ctx context.Context, k int, rng *rand.Rand) {
		w.prWriter(ctx, share(w.t.prs, k, w.load.PRWriters), rng)
	})
	goN(w.load.CommentWriters, func(ctx context.Context, k int, rng *rand.Rand) {
		w.commentWriter(ctx, k, share(w.t.prs, k, w.load.CommentWriters), rng)
	})
	for i := 1; i <= w.e.Nodes(); i++ {
		goN(w.load.ReadersPerNode, func(ctx context.Context, _ int, rng *rand.Rand) { w.reader(ctx, i, rng) })
		goN(w.load.KVClientsPerNode, func(ctx context.Context, k int, rng *rand.Rand) {
			w.kvClient(ctx, i, i*100+k, rng)
		})
	}
	wg.Wait()
}

// share is writer k's share of the pull requests (every n-th).
func share(prs []int64, k, n int) []int64 {
	var out []int64
	for i := k; i < len(prs); i += n {
		out = append(out, prs[i])
	}
	return out
}

// anyNode picks a node to send a write through: any node, including one a
// fault has stopped (its requests fail or wait, as a user's would).
func (w *workload) anyNode(rng *rand.Rand) int { return 1 + rng.IntN(w.e.Nodes()) }

func (w *workload) url(i int, path string) string { return "http://" + w.e.HTTP(i) + path }

// dbVersion reads a pull request's version from the database.
func (w *workload) dbVersion(ctx context.Context, pr int64) (int64, error) {
	var v int64
	err := w.db.QueryRowContext(ctx, rebind(w.e.postgres(), "SELECT version FROM pull_requests WHERE id = ?"), pr).Scan(&v)
	return v, err
}

func (w *workload) prWriter(ctx context.Context, prs []int64, rng *rand.Rand) {
	if len(prs) == 0 {
		return
	}
	cur := map[int64]int64{}
	for _, pr := range prs {
		v, err := w.dbVersion(ctx, pr)
		if err != nil {
			w.rec.violation(Violation{Check: "harness", Detail: fmt.Sprintf("reading pull request %d from the database: %v", pr, err)})
			return
		}
		cur[pr] = v
	}
	// abandoned marks the pull requests whose latest update was given up
	// on: the node finishes such an update even so (a write is not cut
	// short by its client's leaving), perhaps after the version read back
	// here, so the next update may meet 409 — the abandonment's doing,
	// not a failure.
	abandoned := map[int64]bool{}
	seq := 0
	for ctx.Err() == nil {
		pr := prs[rng.IntN(len(prs))]
		node := w.anyNode(rng)
		seq++
		title := fmt.Sprintf("chaos %d.%d", pr, seq)
		body, _ := json.Marshal(map[string]any{"version": cur[pr], "title": title})
		start := time.Now()
		rctx, cancel, giveUp := w.abandoning(ctx, rng)
		code, resp, err := doReq(rctx, w.e.client, http.MethodPut, w.url(node, w.t.path[pr]), body, true)
		cancel()
		if ctx.Err() != nil {
			return // cut off by the end of the run: not counted
		}
		after := abandoned[pr]
		abandoned[pr] = giveUp && rctx.Err() != nil
		// learn reads the version back after an update whose outcome
		// this writer does not know.
		learn := func() {
			if v, err := w.dbVersion(ctx, pr); err == nil {
				cur[pr] = v
			}
		}
		switch {
		case abandoned[pr]:
			// Given up on: the update may have been applied.
			w.rec.op(opPRUpdate+opAbandoned, node, start, time.Now(), "")
			learn()
		case after && err == nil && code == http.StatusConflict:
			w.rec.op(opPRUpdate+opConflictAfterAbandoned, node, start, time.Now(), "")
			learn()
		case err == nil && code == http.StatusOK:
			var got struct {
				Version int64  `json:"version"`
				Title   string `json:"title"`
			}
			if json.Unmarshal(resp, &got) != nil || got.Title != title {
				w.rec.op(opPRUpdate, node, start, time.Now(), "200 with another update")
				w.rec.violation(Violation{Check: "harness", Node: node, Detail: fmt.Sprintf("update of pull request %d answered 200 with %s", pr, resp)})
				continue
			}
			w.rec.ackPR(pr, got.Version, title, node, start)
			cur[pr] = got.Version
		default:
			// 409 (an earlier update whose answer was lost applied), an
			// error or a timeout: the outcome is unknown; learn the version.
			w.rec.op(opPRUpdate, node, start, time.Now(), failure(code, resp, err))
			learn()
			if code != http.StatusConflict {
				sleepCtx(ctx, 50*time.Millisecond)
			}
		}
		sleepCtx(ctx, w.load.Pace)
	}
}

func (w *workload) commentWriter(ctx context.Context, k int, prs []int64, rng *rand.Rand) {
	if len(prs) == 0 {
		return
	}
	seq := 0
	for ctx.Err() == nil {
		pr := prs[rng.IntN(len(prs))]
		node := w.anyNode(rng)
		seq++
		text := fmt.Sprintf("chaos c%d.%d.%d", pr, k, seq)
		body, _ := json.Marshal(map[string]string{"text": text})
		start := time.Now()
		rctx, cancel, giveUp := w.abandoning(ctx, rng)
		code, resp, err := doReq(rctx, w.e.client, http.MethodPost, w.url(node, w.t.path[pr]+"/comments"), body, true)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if giveUp && rctx.Err() != nil {
			w.rec.op(opComment+opAbandoned, node, start, time.Now(), "")
		} else if err == nil && code == http.StatusCreated {
			w.rec.ackComment(pr, text, node, start)
		} else {
			w.rec.op(opComment, node, start, time.Now(), failure(code, resp, err))
			sleepCtx(ctx, 50*time.Millisecond)
		}
		sleepCtx(ctx, w.load.Pace)
	}
}

// abandoning returns the context a write's request runs under: ctx, or,
// for the share LoadParameters.Abandon of writes, ctx with a deadline a
// random 0 to AbandonAfter away (abandoned true).
func (w *workload) abandoning(ctx context.Context, rng *rand.Rand) (context.Context, context.CancelFunc, bool) {
	if w.load.Abandon <= 0 || rng.Float64() >= w.load.Abandon {
		return ctx, func() {}, false
	}
	after := w.load.AbandonAfter
	if after <= 0 {
		after = 10 * time.Millisecond
	}
	rctx, cancel := context.WithTimeout(ctx, time.Duration(rng.Int64N(int64(after))))
	return rctx, cancel, true
}

// reader reads pull requests and comment lists through node i.
func (w *workload) reader(ctx context.Context, i int, rng *rand.Rand) {
	for ctx.Err() == nil {
		pr := w.t.prs[rng.IntN(len(w.t.prs))]
		if rng.IntN(2) == 0 {
			w.readPR(ctx, i, pr)
		} else {
			w.readComments(ctx, i, pr)
		}
		sleepCtx(ctx, w.load.Pace)
	}
}

func (w *workload) readPR(ctx context.Context, i int, pr int64) {
	start := time.Now()
	code, body, err := doReq(ctx, w.e.client, http.MethodGet, w.url(i, w.t.path[pr]), nil, true)
	end := time.Now()
	if ctx.Err() != nil {
		return
	}
	var got struct {
		Version int64  `json:"version"`
		Title   string `json:"title"`
	}
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &got) != nil {
		w.rec.op(opPRRead, i, start, end, failure(code, body, err))
		sleepCtx(ctx, 50*time.Millisecond)
		return
	}
	w.rec.readPR(pr, i, start, end, got.Version, got.Title)
}

// commentPage is one page of a comment list.
type commentPage struct {
	Values []struct {
		ID   int64  `json:"id"`
		Text string `json:"text"`
	} `json:"values"`
	IsLastPage bool `json:"isLastPage"`
}

func (w *workload) readComments(ctx context.Context, i int, pr int64) {
	start := time.Now()
	code, body, err := doReq(ctx, w.e.client, http.MethodGet, w.url(i, w.t.path[pr]+"/comments?start=0&limit=1000"), nil, true)
	end := time.Now()
	if ctx.Err() != nil {
		return
	}
	var page commentPage
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &page) != nil {
		w.rec.op(opCommentsRd, i, start, end, failure(code, body, err))
		sleepCtx(ctx, 50*time.Millisecond)
		return
	}
	texts := map[string]bool{}
	for _, c := range page.Values {
		if strings.HasPrefix(c.Text, "chaos ") {
			texts[c.Text] = true
		}
	}
	w.rec.readComments(pr, i, start, end, texts)
}

// kvClient runs gets, puts and compare-and-sets through node i.
func (w *workload) kvClient(ctx context.Context, i, client int, rng *rand.Rand) {
	seen := map[string]uint64{} // the last version this client saw per key
	seq := 0
	for ctx.Err() == nil {
		key := fmt.Sprintf("chaos/kv/k%d", rng.IntN(w.load.KVKeys))
		seq++
		val := fmt.Sprintf("c%d.%d", client, seq)
		var in kvInput
		switch r := rng.IntN(100); {
		case r < 45:
			in = kvInput{Key: key, Op: kvGet}
		case r < 75:
			in = kvInput{Key: key, Op: kvPut, Value: val}
		default:
			in = kvInput{Key: key, Op: kvCAS, Value: val, Expect: seen[key]}
		}
		out, known := w.kvDo(ctx, i, client, in)
		if ctx.Err() != nil {
			return
		}
		if known && out.Version > 0 && (out.Found || out.OK) {
			seen[key] = out.Version
		}
		if !known {
			sleepCtx(ctx, 50*time.Millisecond)
		}
		sleepCtx(ctx, w.load.Pace)
	}
}

// kvDo sends one kv operation through node i and records it; known is
// false when the outcome is unknown.
func (w *workload) kvDo(ctx context.Context, i, client int, in kvInput) (kvOutput, bool) {
	path := "/v1/kv/" + in.Key
	method, kind := http.MethodGet, opKVGet
	var body []byte
	switch in.Op {
	case kvPut:
		method, kind, body = http.MethodPut, opKVPut, []byte(in.Value)
	case kvCAS:
		method, kind, body = http.MethodPut, opKVCAS, []byte(in.Value)
		path += "?cas=" + strconv.FormatUint(in.Expect, 10)
	}
	start := time.Now()
	code, resp, err := doReq(ctx, w.e.client, method, w.url(i, path), body, true)
	end := time.Now()
	if ctx.Err() != nil {
		// cut off by the end of the load: a write may still apply, so it
		// stays in the history as an open call (and out of the counts)
		if in.Op != kvGet {
			w.rec.kvOpen(client, in, start)
		}
		return kvOutput{}, false
	}
	var out kvOutput
	known := err == nil
	if known {
		var kv struct {
			Value   string `json:"value"`
			Version uint64 `json:"version"`
		}
		switch {
		case code == http.StatusOK && json.Unmarshal(resp, &kv) == nil:
			if in.Op == kvGet {
				out = kvOutput{Found: true, Value: kv.Value, Version: kv.Version}
			} else {
				out = kvOutput{OK: true, Version: kv.Version}
			}
		case code == http.StatusNotFound && in.Op == kvGet:
			out = kvOutput{}
		case code == http.StatusConflict && in.Op == kvCAS:
			out = kvOutput{Mismatch: true}
		default:
			known = false
		}
	}
	why := ""
	if !known {
		why = failure(code, resp, err)
	}
	w.rec.kvOp(kind, i, client, in, out, start, end, known, why)
	return out, known
}
