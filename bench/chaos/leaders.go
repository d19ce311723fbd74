package chaos

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// leaderWatch asks every node, all through a run, which raft role it has
// in which term, and records who claimed leadership in each term: raft
// allows at most one leader per term, whatever the partitions (a leader
// cut off from the majority may go on believing it leads, but only in
// its old term, while the majority elects one in a later term).
type leaderWatch struct {
	mu      sync.Mutex
	claims  map[uint64][]string // term: the nodes that said they led in it
	samples int
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// watchLeaders starts polling every node every interval until stop.
func (e *Env) watchLeaders(ctx context.Context, interval time.Duration) *leaderWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &leaderWatch{claims: map[uint64][]string{}, stop: cancel}
	for i := 1; i <= e.Nodes(); i++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				if v, err := e.view(ctx, i); err == nil {
					w.sample(fmt.Sprintf("node%d", i), v)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	return w
}

func (w *leaderWatch) sample(node string, v *clusterView) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples++
	if v.Raft.Role != "leader" {
		return
	}
	if c := w.claims[v.Raft.Term]; !slices.Contains(c, node) {
		w.claims[v.Raft.Term] = append(c, node)
	}
}

// close stops the polling and records a violation for each term that had
// more than one leader. Safe twice.
func (w *leaderWatch) close(rec *recorder) {
	w.stop()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	var terms []uint64
	for t, c := range w.claims {
		if len(c) > 1 {
			terms = append(terms, t)
		}
	}
	sort.Slice(terms, func(a, b int) bool { return terms[a] < terms[b] })
	for _, t := range terms {
		rec.violation(Violation{Check: "one leader", Detail: fmt.Sprintf("term %d had %d leaders: %s", t, len(w.claims[t]), strings.Join(w.claims[t], ", "))})
	}
	w.claims = nil
}

// terms is how many terms saw a leader.
func (w *leaderWatch) terms() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.claims)
}

// checkOneLeader waits, up to d, until every node names the same leader
// and that node alone says it leads; a cluster that never gets there is a
// violation.
func checkOneLeader(ctx context.Context, e *Env, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last string
	for {
		last = e.leaderAgreement(ctx)
		if last == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			e.rec.violation(Violation{Check: "one leader", Detail: fmt.Sprintf("after the run the nodes did not agree on one leader within %v: %s", d, last)})
			return ctx.Err()
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// leaderAgreement is "" when the nodes agree on one leader, else what
// they said.
func (e *Env) leaderAgreement(ctx context.Context) string {
	named := map[string]bool{}
	var leading, said []string
	for i := 1; i <= e.Nodes(); i++ {
		v, err := e.view(ctx, i)
		if err != nil {
			return fmt.Sprintf("node%d: %v", i, err)
		}
		named[v.Raft.Leader] = true
		if v.Raft.Role == "leader" {
			leading = append(leading, fmt.Sprintf("node%d", i))
		}
		said = append(said, fmt.Sprintf("node%d: %s, term %d, leader %q", i, v.Raft.Role, v.Raft.Term, v.Raft.Leader))
	}
	if len(named) == 1 && len(leading) == 1 && named[leading[0]] {
		return ""
	}
	return strings.Join(said, "; ")
}
