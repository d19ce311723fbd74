package dmap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/cluster"
)

// Handing a partition over: a node that becomes a partition's owner
// without a copy it can trust (it was not the partition's untainted
// backup throughout) fetches the previous owner's copy before it answers
// anything. The previous owner gives it only once it has adopted the new
// table (so it accepts no more writes for the partition: its copy holds
// every write it ever acknowledged), and keeps its copy for that purpose
// for a while after it lost the partition. If the previous owner is gone
// or has no copy to give, the new owner starts empty (the loss the
// package doc states).

const rpcFetch = "dmap.fetch" // a new owner asks the previous one for its copy

// handoffTime is how long a former owner keeps its copy for the next
// owner to fetch.
func (d *DMap) handoffTime() time.Duration { return 4*d.cfg.SyncTimeout + 2*d.leaseDuration() }

// planFetch (pt locked) notes where the new owner's data is: the owner of
// the table before this node's run as owner began, if this node adopted
// that table.
func (d *DMap) planFetch(pt *part, p int, start, epoch uint64) {
	pt.fetchFrom = ""
	prev, _, ok := d.cfg.Keeper.AdoptedAt(start - 1)
	if !ok || start <= 1 {
		return
	}
	if o := prev.Owner(p); o != "" && o != d.self {
		pt.fetchFrom, pt.fetchEpoch, pt.fetchUntil = o, epoch, d.cfg.Now().Add(d.handoffTime())
	}
}

// fetch asks the previous owner for its copy and installs it, or gives up
// (starting empty) when the previous owner is gone, has nothing, or does
// not answer within the handoff time.
func (d *DMap) fetch(pt *part, p int, from string, epoch uint64) {
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.SyncTimeout)
	defer cancel()
	req := appendReplication(nil, &replication{Partition: p, Epoch: epoch})
	body, err := d.rpc.Call(ctx, from, rpcFetch, req)
	var r replication
	if err == nil {
		r, err = decodeReplication(body)
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.fetching = false
	if pt.fetchFrom != from || pt.fetchEpoch != epoch || !pt.owner {
		return // the table moved on
	}
	switch {
	case err == nil && r.Full:
		k := ks{pt, d}
		for i := range r.Records {
			if rec := &r.Records[i]; rec.E != nil {
				k.put(rec.Key, rec.E)
			}
		}
		pt.fetchFrom = ""
		d.fetches.Add(1)
	case err == nil, d.gone(from), d.cfg.Now().After(pt.fetchUntil):
		d.cfg.Logger.Warn("dmap: starting a partition empty: its previous owner has no copy to give", "partition", p, "previous", from, "err", err)
		pt.fetchFrom = ""
		d.emptyStarts.Add(1)
	default:
		d.cfg.Logger.Debug("dmap: fetching a partition", "partition", p, "from", from, "err", err)
	}
}

// gone reports whether member is known to have failed or left.
func (d *DMap) gone(member string) bool {
	m, ok := d.cfg.Node.Member(member)
	return !ok || m.State == cluster.StateFailed || m.State == cluster.StateLeft
}

// handleFetch gives a new owner this node's copy of a partition it no
// longer owns, once it has adopted the new owner's table.
func (d *DMap) handleFetch(ctx context.Context, from string, body []byte) ([]byte, error) {
	if d.closed.Load() {
		return nil, ErrClosed
	}
	q, err := decodeReplication(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable fetch: %w", err)
	}
	if q.Partition >= d.cfg.Partitions {
		return nil, fmt.Errorf("%w: fetch of partition %d", ErrCodec, q.Partition)
	}
	d.awaitEpoch(ctx, q.Epoch)
	pt, t := d.lockPart(q.Partition)
	defer pt.mu.Unlock()
	if t.Epoch < q.Epoch || pt.owner {
		return nil, errors.New("dmap: not yet at the new owner's table")
	}
	out := replication{Partition: q.Partition, Epoch: t.Epoch}
	if pt.handoff {
		out.Full, out.Seq = true, pt.seq
		out.Records = make([]record, 0, len(pt.keys))
		for k, e := range pt.keys {
			out.Records = append(out.Records, record{Key: k, E: e})
		}
		pt.handoff = false
		if !pt.backup {
			pt.dropAll(d)
		}
	}
	return appendReplication(nil, &out), nil
}
