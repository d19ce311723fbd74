package l2cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/cluster/rpc"
)

// rpcSpaces is a query-space update sent straight to one member, and
// answered once the member has applied it (syncSpaces).
const rpcSpaces = "l2.spaces"

// syncSpaces sends a query-space update to every member holding an
// active read-lease record, except this node and the members in covered
// (which applied it already: they were told in the messages of the
// write's change at its owner), and returns when each has applied it or
// has been excluded (excludeUnreached) — the bus's synchronous delivery,
// without the bus. Those records are the members a synchronous message
// must reach (the package doc's lease argument: a member whose record is
// not active serves nothing before it activates, drops everything when
// it does, and waits a lease before it serves), and a query-space stamp
// is applied on arrival whatever the order, so the update needs neither
// the bus's numbering nor its order; a message that is lost leaves its
// member unacknowledged, and excluded. Sent this way, each member's
// update is one message answered on the connection's reader (an inline
// handler, a hand-written body), where the bus's synchronous message
// cost a goroutine at each end and a hand-off to the bus's delivery
// goroutine. If a member has no handler for it (a node of an older
// build), the update is published on the bus as before.
func (c *Cache) syncSpaces(ctx context.Context, spaces []string, id updateID, covered []string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.SyncTimeout)
	defer cancel()
	to, sent, err := c.goSpaces(ctx, spaces, id, covered)
	if err != nil {
		return fmt.Errorf("%w: reading the lease registry: %w", ErrExcludeFailed, err)
	}
	acked := slices.Clone(covered)
	older := false
	for i, p := range sent {
		_, err := p.Wait(ctx)
		if err == nil {
			acked = append(acked, to[i])
			continue
		}
		var re *rpc.RemoteError
		if errors.As(err, &re) && strings.HasPrefix(re.Msg, "no handler for") {
			older = true
		}
		c.cfg.Logger.Debug("l2cache: a query-space update was not acknowledged", "to", to[i], "err", err)
	}
	if older {
		return c.publishBus(ctx, message{Op: opSpaces, Spaces: spaces, Upd: id})
	}
	return c.excludeUnreached(ctx, acked)
}

// goSpaces sends a query-space update to every member holding an active
// read-lease record except this node and the members in covered, without
// waiting for the answers: it returns the members sent to, and their
// calls, in the same order.
func (c *Cache) goSpaces(ctx context.Context, spaces []string, id updateID, covered []string) ([]string, []*rpc.Pending, error) {
	holders, err := c.cfg.Lease.Holders(ctx)
	if err != nil {
		return nil, nil, err
	}
	self := c.cfg.Lease.cfg.Name
	var body []byte
	node := c.cfg.Node.RPC()
	to := make([]string, 0, len(holders))
	sent := make([]*rpc.Pending, 0, len(holders))
	for _, h := range holders {
		if h == self || slices.Contains(covered, h) {
			continue
		}
		if body == nil {
			body = appendSpaces(nil, time.Now().UnixNano(), spaces, id)
		}
		// An invalidation, as it was on the bus: counted by kind, not
		// in RemoteCalls (the calls to owners and backups: a LOCAL
		// node makes none).
		c.stats.RemoteByKind[remoteSpaces].Add(1)
		to = append(to, h)
		sent = append(sent, node.Go(ctx, h, rpcSpaces, body))
	}
	return to, sent, nil
}

// handleSpaces applies a query-space update from another member
// (syncSpaces). It does not block.
func (c *Cache) handleSpaces(_ context.Context, from string, body []byte) ([]byte, error) {
	sentAt, spaces, id, err := decodeSpaces(body)
	if err != nil {
		return nil, fmt.Errorf("unreadable query-space update: %w", err)
	}
	c.stats.InvalidationsReceived.Add(1)
	if sentAt > 0 {
		c.stats.InvalidationLag.Add(time.Duration(time.Now().UnixNano() - sentAt))
	}
	c.markSpaces(spaces, id)
	return nil, nil
}

// appendSpaces encodes a query-space update: [sent (Unix ns), [space…]],
// its name among the spaces (appendSpacesNamed).
func appendSpaces(b []byte, sentAt int64, spaces []string, id updateID) []byte {
	b = append(b, 0x92)
	b = appendUint(b, uint64(max(sentAt, 0)))
	return appendSpacesNamed(b, spaces, id, false, nil)
}

func decodeSpaces(b []byte) (int64, []string, updateID, error) {
	d := decoder{b: b}
	d.header(2)
	sentAt := int64(d.uint(math.MaxInt64))
	spaces, id, want, need := d.spacesNamed()
	if want || len(need) > 0 {
		d.fail("a get's names in a query-space update")
	}
	if err := d.end(); err != nil {
		return 0, nil, updateID{}, err
	}
	if spaces == nil {
		spaces = []string{}
	}
	return sentAt, spaces, id, nil
}
