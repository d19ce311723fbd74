package l2cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
)

// Query results shared through their owner (NEAR mode) need the owner to
// have applied, when it answers, every update of the query's spaces the
// reader has applied: a query-space update reaches the members in no
// order, so without that the reader could keep the owner's result from
// before an update it applied itself, and serve it after the write is
// acknowledged (the near type's doc). So every update is named, and the
// reader names in its read the updates it applied that may not have
// reached the owner yet; the owner's answer may be kept only if it
// applied all of them. Which those are, the writer says: each update
// carries the writer's watermark, below which every update it made has
// resolved — its write was acknowledged (so every serving member applied
// it, or was excluded and waited out, and answers nothing now) or failed
// (and nothing was promised). The reader keeps the updates it applied
// above their writers' watermarks, and names those.

// updateID names one query-space update: the incarnation of the node
// that made it (a random number its Cache drew when it started, never 0),
// the update's number there, and the writer's watermark when it was sent
// (every update of the incarnation numbered at or below it has resolved).
// The zero updateID names nothing: an update from a node of an older
// build, which the reader cannot name to an owner.
type updateID struct {
	Inc, Seq, Done uint64
}

// writerSeqs numbers this node's query-space updates and tracks which
// have resolved.
type writerSeqs struct {
	mu   sync.Mutex
	next uint64              // the last number given
	open map[uint64]struct{} // given, not resolved
	done uint64              // every number at or below has resolved
}

// begin numbers a new update.
func (w *writerSeqs) begin() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open == nil {
		w.open = map[uint64]struct{}{}
	}
	w.next++
	w.open[w.next] = struct{}{}
	return w.next
}

// end resolves update seq and returns the watermark.
func (w *writerSeqs) end(seq uint64) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.open, seq)
	for w.done < w.next {
		if _, open := w.open[w.done+1]; open {
			break
		}
		w.done++
	}
	return w.done
}

// watermark is the number at or below which every update has resolved.
func (w *writerSeqs) watermark() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done
}

// maxExtra bounds the numbers a seqSet keeps out of order, and maxOpen
// the updates of one space a node keeps as possibly unapplied at an
// owner: past them the oldest are forgotten, which only makes an owner's
// answer less often kept (seqSet.has answers false; a space that lost
// one is never shared again in this process). maxNeed bounds the updates
// one get names: a reader with more open (a writer's update that has not
// resolved for seconds holds its watermark, say, under a partition) keeps
// no shared answer until they resolve.
const (
	maxExtra = 4096
	maxOpen  = 4096
	maxNeed  = 64
)

// seqSet is the updates of one incarnation this node applied: every
// number from base to prefix, and the numbers in extra. The first update
// applied sets base: this node cannot tell which updates before it
// reached it (it started, or was reset, after them).
//
// extra is kept sorted, so that a gap that never closes costs nothing
// per update: one does in NEAR mode as a rule (a keyed space's updates
// reach only the members registered under it, so a member sees some of
// a writer's numbers and not others), and after a missed message in
// LOCAL mode. Once extra is full, every update forgets the smallest
// number; found by a scan of a map, that cost up to 18 µs of CPU per
// operation (BENCHMARKS.md, "A gap in a writer's update numbers").
type seqSet struct {
	base, prefix uint64
	extra        []uint64 // ascending, none of them in base..prefix
}

func (s *seqSet) add(seq uint64) {
	switch {
	case s.base == 0:
		s.base, s.prefix = seq, seq
	case seq == s.prefix+1:
		s.prefix++
		for {
			i, ok := slices.BinarySearch(s.extra, s.prefix+1)
			if !ok {
				break
			}
			s.extra = slices.Delete(s.extra, i, i+1)
			s.prefix++
		}
	case s.has(seq):
	default:
		if len(s.extra) >= maxExtra {
			s.extra = s.extra[1:] // the smallest (append reallocates, freeing the front)
		}
		if n := len(s.extra); n == 0 || seq > s.extra[n-1] {
			s.extra = append(s.extra, seq) // the usual order: ascending
			return
		}
		i, _ := slices.BinarySearch(s.extra, seq)
		s.extra = slices.Insert(s.extra, i, seq)
	}
}

func (s *seqSet) has(seq uint64) bool {
	if s.base != 0 && s.base <= seq && seq <= s.prefix {
		return true
	}
	_, ok := slices.BinarySearch(s.extra, seq)
	return ok
}

// spaceUpdates is what a node knows of the named query-space updates:
// which it applied (for its answers as an owner), which of those may not
// have reached the other members yet (for its reads), and the spaces it
// has seen an unnamed update of. Its methods are called with Cache.mu
// held, as the spaces' stamps are updated.
type spaceUpdates struct {
	applied map[uint64]*seqSet    // by incarnation
	done    map[uint64]uint64     // each incarnation's latest watermark seen
	open    map[string][]updateID // by space: applied, above their writer's watermark
	// unnamed: spaces this node applied an update of that carried no
	// name. Results of them are not kept from an owner's answer again in
	// this process: the update cannot be named, so it cannot be checked.
	unnamed map[string]bool
}

// apply records that this node applied update id of spaces.
func (u *spaceUpdates) apply(spaces []string, id updateID) {
	u.init()
	if id.Inc == 0 {
		for _, s := range spaces {
			u.unnamed[s] = true
		}
		return
	}
	set := u.applied[id.Inc]
	if set == nil {
		set = &seqSet{}
		u.applied[id.Inc] = set
	}
	set.add(id.Seq)
	u.resolved(id.Inc, id.Done)
	if id.Seq <= u.done[id.Inc] {
		return
	}
	for _, s := range spaces {
		open := u.open[s]
		if slices.ContainsFunc(open, func(o updateID) bool { return o.Inc == id.Inc && o.Seq == id.Seq }) {
			continue
		}
		if len(open) >= maxOpen {
			open = slices.Delete(open, 0, 1)
			u.unnamed[s] = true // one is forgotten: this space can no longer be checked
		}
		u.open[s] = append(open, updateID{Inc: id.Inc, Seq: id.Seq})
	}
}

func (u *spaceUpdates) init() {
	if u.applied == nil {
		u.applied, u.done = map[uint64]*seqSet{}, map[uint64]uint64{}
		u.open, u.unnamed = map[string][]updateID{}, map[string]bool{}
	}
}

// resolved records an incarnation's watermark and forgets its open
// updates at or below it.
func (u *spaceUpdates) resolved(inc, done uint64) {
	if inc == 0 || done <= u.done[inc] {
		return
	}
	u.init()
	u.done[inc] = done
	for s, open := range u.open {
		open = slices.DeleteFunc(open, func(o updateID) bool { return o.Inc == inc && o.Seq <= done })
		if len(open) == 0 {
			delete(u.open, s)
		} else {
			u.open[s] = open
		}
	}
}

// need returns the updates of spaces this node applied that an owner
// must have applied for its answer to be kept here, and false if no
// answer may be kept (an update of them carried no name, or too many are
// open to name).
func (u *spaceUpdates) need(spaces []string) ([]updateID, bool) {
	var out []updateID
	for _, s := range spaces {
		if u.unnamed[s] {
			return nil, false
		}
		for _, id := range u.open[s] {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	if len(out) > maxNeed {
		return nil, false
	}
	return out, true
}

// has reports whether this node applied every update in ids.
func (u *spaceUpdates) has(ids []updateID) bool {
	for _, id := range ids {
		set := u.applied[id.Inc]
		if set == nil || !set.has(id.Seq) {
			return false
		}
	}
	return true
}

// newIncarnation draws a process's name for its updates: random, so that
// a restarted node's updates are not mistaken for its previous process's.
func newIncarnation() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}

// beginUpdate names a query-space update this node makes; endUpdate
// resolves it, when the write that made it returns (acknowledged or
// failed).
func (c *Cache) beginUpdate() updateID {
	seq := c.seqs.begin()
	return updateID{Inc: c.inc, Seq: seq, Done: c.seqs.watermark()}
}

func (c *Cache) endUpdate(id updateID) {
	done := c.seqs.end(id.Seq)
	c.mu.Lock()
	c.updates.resolved(c.inc, done)
	c.mu.Unlock()
}

// noteUpdate records a named update of spaces that stamps nothing (a
// region clear, under its clearSpace).
func (c *Cache) noteUpdate(spaces []string, id updateID) {
	c.mu.Lock()
	c.updates.apply(spaces, id)
	c.mu.Unlock()
}

// clearSpace names a region's clears among the query spaces' updates: a
// clear of a query region reaches the members in no order, as a
// query-space update does. Not a table's name (it starts with a NUL).
func clearSpace(region string) string { return "\x00clear\x00" + region }

// updatesNeeded returns what a get of a query result names to its owner
// (spaceUpdates.need) for spaces and the region's clears.
func (c *Cache) updatesNeeded(region string, spaces []string) ([]updateID, bool) {
	all := append(slices.Clip(spaces), clearSpace(region))
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.updates.need(all)
}

// appliedAll reports whether this node applied every update in ids.
func (c *Cache) appliedAll(ids []updateID) bool {
	if len(ids) == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.updates.has(ids)
}

// On the wire, names ride in the spaces array of the message they belong
// to, as spaces no table has (each begins with a NUL byte; a space an
// application names may not): a node of an older build reads them as one
// more space, stamps it and carries it on, so every message keeps the
// shape such a node reads, and such a node never vouches (distReply).
const (
	nameUpd  = "\x00u" // + 24 bytes: the update's updateID (a change, a query-space update)
	nameWant = "\x00w" // a get whose reader would keep the answer
	nameNeed = "\x00n" // + 16 bytes: an update the get names (incarnation, number)
)

// ErrReservedSpace is returned for a query space whose name begins with a
// NUL byte: those name updates on the wire.
var ErrReservedSpace = errors.New("l2cache: a query space's name may not begin with a NUL byte")

// reserved reports whether s is a name rather than a query space.
func reserved(s string) bool { return strings.HasPrefix(s, "\x00") }

// checkSpaces refuses reserved space names.
func checkSpaces(spaces []string) error {
	for _, s := range spaces {
		if reserved(s) {
			return fmt.Errorf("%w: %q", ErrReservedSpace, s)
		}
	}
	return nil
}

// appendSpacesNamed encodes spaces and, after them, the names.
func appendSpacesNamed(b []byte, spaces []string, upd updateID, want bool, need []updateID) []byte {
	n := len(spaces) + len(need)
	if upd != (updateID{}) {
		n++
	}
	if want {
		n++
	}
	b = appendArrayHeader(b, n)
	for _, s := range spaces {
		b = appendStr(b, s)
	}
	if upd != (updateID{}) {
		b = append(append(b, 0xa0|byte(len(nameUpd)+24)), nameUpd...)
		b = binary.BigEndian.AppendUint64(b, upd.Inc)
		b = binary.BigEndian.AppendUint64(b, upd.Seq)
		b = binary.BigEndian.AppendUint64(b, upd.Done)
	}
	if want {
		b = appendStr(b, nameWant)
	}
	for _, id := range need {
		b = append(append(b, 0xa0|byte(len(nameNeed)+16)), nameNeed...)
		b = binary.BigEndian.AppendUint64(b, id.Inc)
		b = binary.BigEndian.AppendUint64(b, id.Seq)
	}
	return b
}

// spacesNamed reads what appendSpacesNamed wrote (or an older build's
// spaces, with no names).
func (d *decoder) spacesNamed() (spaces []string, upd updateID, want bool, need []updateID) {
	n := d.array(maxSpaces + 1 + maxNeed)
	for range n {
		s := d.str()
		switch {
		case !reserved(s):
			if spaces == nil {
				spaces = make([]string, 0, n)
			}
			spaces = append(spaces, s)
		case len(s) == len(nameUpd)+24 && strings.HasPrefix(s, nameUpd):
			upd = updateID{Inc: be64(s[2:]), Seq: be64(s[10:]), Done: be64(s[18:])}
		case s == nameWant:
			want = true
		case len(s) == len(nameNeed)+16 && strings.HasPrefix(s, nameNeed):
			need = append(need, updateID{Inc: be64(s[2:]), Seq: be64(s[10:])})
		default:
			d.fail("a reserved query-space name of %d bytes", len(s))
		}
	}
	if len(spaces) > maxSpaces || len(need) > maxNeed {
		d.fail("%d query spaces and %d named updates", len(spaces), len(need))
	}
	return spaces, upd, want, need
}

func be64(s string) uint64 { return binary.BigEndian.Uint64([]byte(s[:8])) }
