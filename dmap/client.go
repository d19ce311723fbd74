package dmap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/cluster/rpc"
)

// DoOptions change how Do runs.
type DoOptions struct {
	// Track registers this node at the owners as a reader of every key
	// the read operations name: the next change of each key is reported
	// to OnInvalidate (before the change is acknowledged).
	Track bool
}

// Do runs ops at their keys' owners: those of one partition atomically
// and in order, in one message; those of different partitions
// independently (at once). It retries while an owner is unknown, refuses
// (a newer table), or may not answer yet, until ctx ends (ErrNoOwner). A
// batch whose outcome is unknown (a backup or holder not told, a broken
// connection) has ErrNotAcked in each of its results. Results alias
// memory that the caller must not change.
func (d *DMap) Do(ctx context.Context, ops []Op, opt DoOptions) ([]Result, error) {
	for i := range ops {
		if err := ops[i].validate(); err != nil {
			return nil, err
		}
	}
	if len(ops) == 1 {
		return d.run(ctx, []batch{{Partition: PartitionOf(ops[0].Key, d.cfg.Partitions), Ops: ops}}, opt, nil)
	}
	byPart := map[int]int{}
	var bs []batch
	var index [][]int // batch → positions in ops
	for i := range ops {
		p := PartitionOf(ops[i].Key, d.cfg.Partitions)
		j, ok := byPart[p]
		if !ok {
			j = len(bs)
			byPart[p] = j
			bs = append(bs, batch{Partition: p})
			index = append(index, nil)
		}
		bs[j].Ops = append(bs[j].Ops, ops[i])
		index[j] = append(index[j], i)
	}
	return d.run(ctx, bs, opt, index)
}

// DoAt runs ops at partition p's owner (for partition-wide operations:
// Scan, Size, Flush, Hold).
func (d *DMap) DoAt(ctx context.Context, p int, ops []Op) ([]Result, error) {
	if p < 0 || p >= d.cfg.Partitions {
		return nil, fmt.Errorf("dmap: no partition %d", p)
	}
	return d.run(ctx, []batch{{Partition: p, Ops: ops}}, DoOptions{}, nil)
}

// run sends the batches to their owners until each is answered, and
// places the results (index maps batch results back; nil: in order).
func (d *DMap) run(ctx context.Context, bs []batch, opt DoOptions, index [][]int) ([]Result, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	n := 0
	for _, b := range bs {
		n += len(b.Ops)
	}
	out := make([]Result, n)
	todo := make([]int, len(bs))
	for i := range todo {
		todo[i] = i
	}
	backoff := time.Millisecond
	for {
		var err error
		todo, err = d.round(ctx, bs, todo, opt, index, out)
		if err != nil {
			return nil, err
		}
		if len(todo) == 0 {
			return out, nil
		}
		d.retries.Add(1)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (partition %d): %w", ErrNoOwner, bs[todo[0]].Partition, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

// round sends the batches in todo, grouped by owner, and returns those to
// retry.
func (d *DMap) round(ctx context.Context, bs []batch, todo []int, opt DoOptions, index [][]int, out []Result) ([]int, error) {
	t := d.cfg.Keeper.Table()
	groups := map[string][]int{}
	var retry []int
	for _, i := range todo {
		o := t.Owner(bs[i].Partition)
		if o == "" {
			retry = append(retry, i)
			continue
		}
		groups[o] = append(groups[o], i)
	}
	var mu sync.Mutex
	var firstErr error
	one := func(owner string, idx []int) {
		again, err := d.send1(ctx, owner, bs, idx, opt, index, out)
		mu.Lock()
		defer mu.Unlock()
		retry = append(retry, again...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if len(groups) == 1 {
		for o, idx := range groups {
			one(o, idx)
		}
	} else {
		var wg sync.WaitGroup
		for o, idx := range groups {
			wg.Add(1)
			go func() { defer wg.Done(); one(o, idx) }()
		}
		wg.Wait()
	}
	return retry, firstErr
}

// send1 sends one owner its batches.
func (d *DMap) send1(ctx context.Context, owner string, bs []batch, idx []int, opt DoOptions, index [][]int, out []Result) ([]int, error) {
	req := request{Track: opt.Track, Batches: make([]batch, len(idx))}
	for j, i := range idx {
		req.Batches[j] = bs[i]
	}
	var rep reply
	if owner == d.self {
		rep = d.serve(ctx, d.self, &req)
	} else {
		d.remoteCalls.Add(1)
		body, err := d.rpc.Call(ctx, owner, rpcOp, appendRequest(nil, &req))
		if err == nil {
			rep, err = decodeReply(body)
			if err == nil && len(rep.Batches) != len(idx) {
				err = fmt.Errorf("%w: %d batches answered, %d sent", ErrCodec, len(rep.Batches), len(idx))
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, rpc.ErrUnreachable), errors.Is(err, rpc.ErrUnknownPeer):
			return idx, nil // not sent: safe to send again
		case errors.Is(err, rpc.ErrConnLost), errors.Is(err, context.DeadlineExceeded):
			var retry []int
			for _, i := range idx {
				if hasWrite(bs[i].Ops) {
					d.place(bs, i, index, out, nil)
				} else {
					retry = append(retry, i)
				}
			}
			return retry, nil
		default:
			return nil, fmt.Errorf("dmap: owner %s: %w", owner, err)
		}
	}
	var retry []int
	for j, i := range idx {
		br := &rep.Batches[j]
		switch br.Status {
		case statusOK:
			if len(br.Results) != len(bs[i].Ops) {
				return nil, fmt.Errorf("%w: %d results for %d operations", ErrCodec, len(br.Results), len(bs[i].Ops))
			}
			d.place(bs, i, index, out, br.Results)
		case statusFailed:
			d.place(bs, i, index, out, nil)
		default:
			retry = append(retry, i)
		}
	}
	return retry, nil
}

// place stores batch i's results (nil: ErrNotAcked for each).
func (d *DMap) place(bs []batch, i int, index [][]int, out []Result, rs []Result) {
	if rs == nil {
		d.notAcked.Add(1)
	}
	for j := range bs[i].Ops {
		r := Result{Err: ErrNotAcked}
		if rs != nil {
			r = rs[j]
		}
		if index == nil {
			out[j] = r // a single batch
		} else {
			out[index[i][j]] = r
		}
	}
}

func hasWrite(ops []Op) bool {
	for i := range ops {
		if ops[i].Code.isWrite() {
			return true
		}
	}
	return false
}

// DoEach runs op at the owner of every partition in ps (partition-wide
// operations: Size, Flush, Hold), in one message per owner. Results are
// in the order of ps.
func (d *DMap) DoEach(ctx context.Context, ps []int, op Op) ([]Result, error) {
	bs := make([]batch, len(ps))
	index := make([][]int, len(ps))
	for i, p := range ps {
		if p < 0 || p >= d.cfg.Partitions {
			return nil, fmt.Errorf("dmap: no partition %d", p)
		}
		bs[i] = batch{Partition: p, Ops: []Op{op}}
		index[i] = []int{i}
	}
	return d.run(ctx, bs, DoOptions{}, index)
}
