package l2cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Keyed query spaces: an update that reaches only the members that hold
// what it invalidates.
//
// A query-space update in DISTRIBUTED and NEAR mode goes to every member
// and waits for each (syncSpaces): any owner may hold a result over the
// space, and in NEAR any node a copy. At 6 nodes that is five round trips
// for each write, most of them to members that hold nothing over the
// space (BENCHMARKS.md, issue 19).
//
// A keyed space is one whose name is wrapped in braces, "{comments/17}",
// and a query over it names it as its key's hash tag (KeyTag), as Redis
// Cluster's keys do: "comments:{comments/17}:pr:5". Every key tagged
// alike, in every region, lives in the partition of the tag
// (PartitionOf), which is the space's partition. So every result over
// the space is at one owner, and an update of it is routed there
// (kindSpaces): the owner stamps the space, then sends the update on to
// the members registered under the space, and answers once each has
// applied it or has been excluded (its read lease waited out) — a near
// change, with the space in place of the key. A NEAR node that reads a
// result over a keyed space registers under the space (distOp.Near, at
// the owner, under the partition's lock, before the answer), and keeps
// the result as a near copy of the partition's owner, as it keeps an
// entity's. Why no read is stale, in the terms of the near type's doc:
//
//   - An owner's result: the owner stamps the space before it answers
//     the writer, and judges every result it holds or is put against its
//     own stamps (the package doc's stale-put argument).
//   - A near copy: its reader was registered before the owner answered.
//     An update the owner applied before the registration is below the
//     floor the owner answered with (a miss, loaded after the commit, or
//     a hit newer than the update); one applied after it takes the
//     registration and is sent to the reader, which stamps the space on
//     arrival — before the copy is kept (refused) or after (never
//     served); a reader that does not answer is excluded and waited out.
//     A read of the writer's own node names the writer's update to the
//     owner (updates.go), which vouches for its answer only once it
//     applied it. A node's stamps of a keyed space show only the updates
//     it was registered for, so a read of a keyed result never joins
//     another read in flight on the strength of them (getQuery): that
//     read may not have registered (its owner could not answer), and an
//     update acknowledged after its load began would not reach this node.
//   - The owner changes (a move, a takeover, a restart): the copies of
//     the partition are dropped as an entity's are (near.part,
//     observeGens), and the new owner holds no results from before it
//     served. A change of the partition's numbering drops them too.
//   - A switch: an update is routed only under a stable DISTRIBUTED or
//     NEAR view, and confirmed as a write is (mode.go: it invalidated
//     every mode read in its epoch and the next); under any other view,
//     and whenever routing fails (no owner, the owner cannot answer yet,
//     a node of an older build refuses the kind), it goes to every
//     member as an unkeyed update does, which is what reached every
//     holder before this was built.
//
// An update of a keyed and an unkeyed space together goes to every
// member. GetQuery refuses a key that does not carry its keyed space as
// its tag (ErrKeyedSpace): the result would live at an owner the update
// never reaches.

// ErrKeyedSpace is returned by GetQuery for a query over keyed spaces
// whose key does not carry the space as its hash tag, or over more than
// one keyed space.
var ErrKeyedSpace = errors.New("l2cache: a query over a keyed space must carry it as its key's hash tag")

// KeyedSpace names a keyed query space: {name}.
func KeyedSpace(name string) string { return "{" + name + "}" }

// IsKeyedSpace reports whether space is keyed: its own hash tag (it
// begins with '{', and its first '}' is its last byte, not its second).
func IsKeyedSpace(space string) bool {
	tag, ok := KeyTag(space)
	return ok && tag == space
}

// KeyTag returns key's hash tag, braces included: from its first '{' to
// the first '}' after it, if there is something between them (Redis
// Cluster's rule).
func KeyTag(key string) (string, bool) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return "", false
	}
	return key[i : i+j+2], true
}

// keyedOf returns the keyed space among spaces, if there is one.
func keyedOf(spaces []string) (string, bool) {
	for _, s := range spaces {
		if IsKeyedSpace(s) {
			return s, true
		}
	}
	return "", false
}

// checkKeyed refuses a query over keyed spaces that key does not carry.
func checkKeyed(key string, spaces []string) error {
	n, keyed := 0, ""
	for _, s := range spaces {
		if IsKeyedSpace(s) {
			n, keyed = n+1, s
		}
	}
	if n == 0 {
		return nil
	}
	if n > 1 {
		return fmt.Errorf("%w: key %q names %d keyed spaces, %q", ErrKeyedSpace, key, n, spaces)
	}
	if tag, _ := KeyTag(key); tag != keyed {
		return fmt.Errorf("%w: key %q, space %s", ErrKeyedSpace, key, keyed)
	}
	return nil
}

// spaceHolderKey is the owner's registry key of the members that hold
// results over a keyed space: the store key of region "" (no region has
// that name) and the space.
func spaceHolderKey(space string) string { return "\x00" + space }

// routable returns the DISTRIBUTED backend that routes an update of
// spaces through their owners, if it may be routed: every space is
// keyed, the view is a stable DISTRIBUTED or NEAR one, and the update
// would otherwise go straight to every member (directSpaces).
func (c *Cache) routable(v *modeView, spaces []string) (*dist, bool) {
	if len(spaces) == 0 || len(v.write) != 1 || (v.write[0] != beDist && v.write[0] != beNear) || !c.directSpaces() {
		return nil, false
	}
	for _, s := range spaces {
		if !IsKeyedSpace(s) {
			return nil, false
		}
	}
	c.mu.Lock()
	d, _ := c.backends[beDist].(*dist)
	c.mu.Unlock()
	return d, d != nil
}

// routeSpaces sends an update of keyed spaces to each space's owner and
// returns when every owner answered that it applied it and told the
// members registered under it, or why one did not (then the caller sends
// the update to every member). One try per space: a partition whose owner
// is moving is not waited for, since every member can be told instead.
func (d *dist) routeSpaces(ctx context.Context, spaces []string, id updateID) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	for _, s := range spaces {
		o := distOp{Kind: kindSpaces, Partition: d.partition("", s), Key: s, Spaces: []string{s}, Upd: id}
		owner := d.keeper.Table().Owner(o.Partition)
		var rep distReply
		var err error
		switch owner {
		case "":
			return fmt.Errorf("space %s: partition %d has no owner yet", s, o.Partition)
		case d.self:
			rep = d.apply(ctx, d.self, o)
		default:
			rep, err = d.remote(ctx, owner, o)
		}
		switch {
		case err != nil:
			return fmt.Errorf("space %s at %s: %w", s, owner, err)
		case rep.NotOwner || rep.Unavailable || rep.Refused:
			return fmt.Errorf("space %s: %s did not apply it (not the owner %t, unavailable %t, refused %t)",
				s, owner, rep.NotOwner, rep.Unavailable, rep.Refused)
		}
	}
	return nil
}

// routing is an update of keyed spaces on its way through their owners,
// alongside the change of the write that made it (Region.change).
type routing struct {
	done chan struct{}
	err  error
}

// goRoute starts routeSpaces; the caller must wait for it.
func (d *dist) goRoute(ctx context.Context, spaces []string, id updateID) *routing {
	r := &routing{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = d.routeSpaces(ctx, spaces, id)
	}()
	return r
}

func (r *routing) wait() error {
	<-r.done
	return r.err
}

// spacesOpLocked checks and applies an update of a keyed space at its
// owner: the space is stamped here. Called with dp.mu held.
func (d *dist) spacesOpLocked(o distOp, skey string) bool {
	if o.Region != "" || len(o.Spaces) != 1 || o.Spaces[0] != o.Key || !IsKeyedSpace(o.Key) ||
		skey != spaceHolderKey(o.Key) || d.partition("", o.Key) != o.Partition {
		return false
	}
	d.c.markSpaces(o.Spaces, o.Upd)
	return true
}

// spacesNoticeLocked takes the members registered under a keyed space
// (skey) and returns the notice that tells them of its update: a near
// change of no key, carrying the space, numbered in each member's
// sequence of the partition. Called with dp.mu held.
func (d *dist) spacesNoticeLocked(dp *dpart, o distOp, skey string, t *PartitionTable) *nearNotice {
	if dp.holders == nil {
		return nil
	}
	hs := dp.holders.take(skey)
	if len(hs) == 0 {
		return nil
	}
	n := &nearNotice{dp: dp, holders: hs, seqs: make([]uint64, len(hs)),
		msg: distOp{Kind: kindInvalidate, Partition: o.Partition, Spaces: o.Spaces, Upd: o.Upd, Epoch: t.Epoch, Ticket: ticket{Owner: d.self}}}
	for i, h := range hs {
		n.seqs[i] = dp.holders.next(h)
	}
	return n
}
