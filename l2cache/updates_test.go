package l2cache

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// The watermark rises over the updates resolved without a gap, whatever
// the order they resolve in.
func TestWriterSeqsWatermark(t *testing.T) {
	var w writerSeqs
	a, b, c := w.begin(), w.begin(), w.begin()
	if a != 1 || b != 2 || c != 3 || w.watermark() != 0 {
		t.Fatalf("numbers %d %d %d, watermark %d", a, b, c, w.watermark())
	}
	if got := w.end(b); got != 0 {
		t.Fatalf("after the second of three resolved: watermark %d, want 0", got)
	}
	if got := w.end(a); got != 2 {
		t.Fatalf("after the first: watermark %d, want 2", got)
	}
	d := w.begin()
	if got := w.end(d); got != 2 {
		t.Fatalf("after the fourth, with the third open: watermark %d, want 2", got)
	}
	if got := w.end(c); got != 4 {
		t.Fatalf("after the third: watermark %d, want 4", got)
	}
}

// A seqSet knows the numbers it was given, in any order, and nothing
// before the first: it cannot tell which of those reached it.
func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, n := range []uint64{10, 11, 13, 9, 15, 12} {
		s.add(n)
	}
	for n, want := range map[uint64]bool{8: false, 9: true, 10: true, 11: true, 12: true, 13: true, 14: false, 15: true, 16: false} {
		if s.has(n) != want {
			t.Errorf("has(%d) = %v, want %v", n, !want, want)
		}
	}
	if s.prefix != 13 || len(s.extra) != 2 { // 9 and 15
		t.Errorf("prefix %d, extra %v", s.prefix, s.extra)
	}
	// Past its bound, the oldest out-of-order number is forgotten: a
	// false "not applied", never a false "applied".
	var b seqSet
	b.add(1)
	for n := range uint64(maxExtra + 1) {
		b.add(3 + n)
	}
	if b.has(3) || !b.has(4) || len(b.extra) != maxExtra {
		t.Errorf("after overflow: has(3) %v, has(4) %v, %d kept", b.has(3), b.has(4), len(b.extra))
	}
}

// A reader names the updates of a query's spaces it applied above their
// writers' watermarks; an owner's answer may be kept only if the owner
// applied them all.
func TestSpaceUpdates(t *testing.T) {
	var reader, owner spaceUpdates
	u1 := updateID{Inc: 7, Seq: 1}
	u2 := updateID{Inc: 7, Seq: 2, Done: 0}
	v1 := updateID{Inc: 8, Seq: 1}
	reader.apply([]string{"comments"}, u1)
	reader.apply([]string{"comments", "prs"}, u2)
	reader.apply([]string{"repos"}, v1)
	need, ok := reader.need([]string{"comments"})
	if !ok || !reflect.DeepEqual(need, []updateID{{Inc: 7, Seq: 1}, {Inc: 7, Seq: 2}}) {
		t.Fatalf("need(comments) = %v %v", need, ok)
	}
	if need, _ := reader.need([]string{"comments", "prs"}); len(need) != 2 {
		t.Fatalf("need(comments, prs) = %v: one update of both spaces is named once", need)
	}
	owner.apply([]string{"comments"}, u1)
	if owner.has(need) {
		t.Fatal("the owner has only the first update, and has() says it has both")
	}
	owner.apply([]string{"comments", "prs"}, u2)
	if !owner.has(need) {
		t.Fatal("the owner applied both, and has() says no")
	}
	// Writer 7 says both resolved (on a later update of its own, here of
	// another space): the reader no longer names them.
	reader.apply([]string{"repos"}, updateID{Inc: 7, Seq: 3, Done: 2})
	if need, ok := reader.need([]string{"comments"}); !ok || len(need) != 0 {
		t.Fatalf("after the watermark: need(comments) = %v %v", need, ok)
	}
	if need, _ := reader.need([]string{"repos"}); !reflect.DeepEqual(need, []updateID{{Inc: 8, Seq: 1}, {Inc: 7, Seq: 3}}) {
		t.Fatalf("need(repos) = %v", need)
	}
	// An unnamed update (a node of an older build): no answer about its
	// space is kept again.
	reader.apply([]string{"prs"}, updateID{})
	if _, ok := reader.need([]string{"comments", "prs"}); ok {
		t.Fatal("an unnamed update of prs, and need says a shared answer may be kept")
	}
	if _, ok := reader.need([]string{"comments"}); !ok {
		t.Fatal("an unnamed update of prs stopped sharing comments")
	}
}

// Past maxNeed open updates, a read names none and keeps no shared
// answer, until their writer's watermark passes them; past maxOpen, one
// is forgotten and the space can no longer be checked.
func TestSpaceUpdatesBound(t *testing.T) {
	var u spaceUpdates
	for n := range uint64(maxNeed + 1) {
		u.apply([]string{"comments"}, updateID{Inc: 5, Seq: n + 1})
	}
	if _, ok := u.need([]string{"comments"}); ok {
		t.Fatalf("%d open updates, and need says a shared answer may be kept", maxNeed+1)
	}
	u.apply([]string{"prs"}, updateID{Inc: 5, Seq: maxNeed + 2, Done: maxNeed + 1})
	if need, ok := u.need([]string{"comments"}); !ok || len(need) != 0 {
		t.Fatalf("after the watermark passed them: need = %d updates, %v", len(need), ok)
	}
	for n := range uint64(maxOpen + 1) {
		u.apply([]string{"comments"}, updateID{Inc: 6, Seq: n + 1})
	}
	u.apply([]string{"prs"}, updateID{Inc: 6, Seq: maxOpen + 2, Done: maxOpen + 1})
	if _, ok := u.need([]string{"comments"}); ok {
		t.Fatal("one update forgotten, and need says a shared answer may be kept")
	}
}

// A space named with a leading NUL byte would be read as an update's name
// on the wire: every call that takes spaces refuses it, and loses nothing.
func TestReservedSpaceNames(t *testing.T) {
	ctx := context.Background()
	c := newLocal(t, DefaultConfig())
	q := region(t, c, "q", NonstrictReadWrite)
	loads := 0
	load := func(context.Context) ([]byte, error) { loads++; return []byte("v"), nil }
	if _, err := q.GetQuery(ctx, "k", []string{"comments", "\x00w"}, load); !errors.Is(err, ErrReservedSpace) || loads != 0 {
		t.Fatalf("GetQuery: %v after %d loads, want ErrReservedSpace and none", err, loads)
	}
	if err := c.UpdateSpaces(ctx, "comments", "\x00u"); !errors.Is(err, ErrReservedSpace) {
		t.Fatalf("UpdateSpaces: %v", err)
	}
	if err := q.Evict(ctx, "k", "\x00n"); !errors.Is(err, ErrReservedSpace) {
		t.Fatalf("Evict: %v", err)
	}
	// The refused update stamped nothing: a result kept before it is
	// still served.
	if _, err := q.GetQuery(ctx, "k", []string{"comments"}, load); err != nil {
		t.Fatal(err)
	}
	c.waitLocal()
	if _, err := q.GetQuery(ctx, "k", []string{"comments"}, load); err != nil || loads != 1 {
		t.Fatalf("after refused updates: %v, %d loads, want 1", err, loads)
	}
}

// A gap that never closes, as NEAR's keyed spaces make one at every
// member: past maxExtra numbers kept, the set still answers, and keeps
// the newest.
func TestSeqSetPermanentGap(t *testing.T) {
	var s seqSet
	s.add(1)
	const n = 3 * maxExtra
	for seq := uint64(3); seq < 3+n; seq++ {
		s.add(seq)
	}
	if len(s.extra) != maxExtra {
		t.Fatalf("%d numbers kept, want %d", len(s.extra), maxExtra)
	}
	if !slices.IsSorted(s.extra) {
		t.Fatal("extra is not sorted")
	}
	for seq, want := range map[uint64]bool{1: true, 2: false, 3: false, 3 + n - maxExtra - 1: false, 3 + n - maxExtra: true, 2 + n: true, 3 + n: false} {
		if s.has(seq) != want {
			t.Errorf("has(%d) = %v, want %v", seq, !want, want)
		}
	}
	// Out of order within the kept window, and the gap closing.
	s.add(3 + n + 1)
	s.add(3 + n)
	if !s.has(3+n) || !s.has(3+n+1) || !slices.IsSorted(s.extra) {
		t.Fatalf("out-of-order adds: has %v %v, sorted %v", s.has(3+n), s.has(3+n+1), slices.IsSorted(s.extra))
	}
	s.add(2)
	if s.prefix != 2 {
		t.Fatalf("prefix %d after the gap's number, want 2 (3 was forgotten)", s.prefix)
	}
}

// mapSeqSet is seqSet as it was before 2026-12-05, its out-of-order
// numbers in a map, the smallest found by a scan: the baseline of
// BenchmarkSeqSetAdd.
type mapSeqSet struct {
	base, prefix uint64
	extra        map[uint64]struct{}
}

func (s *mapSeqSet) add(seq uint64) {
	switch {
	case s.base == 0:
		s.base, s.prefix = seq, seq
	case seq == s.prefix+1:
		s.prefix++
		for {
			if _, ok := s.extra[s.prefix+1]; !ok {
				break
			}
			delete(s.extra, s.prefix+1)
			s.prefix++
		}
	default:
		if s.extra == nil {
			s.extra = map[uint64]struct{}{}
		}
		if len(s.extra) >= maxExtra {
			first, lo := true, uint64(0)
			for k := range s.extra {
				if first || k < lo {
					first, lo = false, k
				}
			}
			delete(s.extra, lo)
		}
		s.extra[seq] = struct{}{}
	}
}

// BenchmarkSeqSetAdd: an update applied by a member that sees a writer's
// numbers with a gap that never closes (NEAR's keyed spaces), against the
// map the set used before, in the same run, and against numbers that come
// without a gap.
func BenchmarkSeqSetAdd(b *testing.B) {
	b.Run("contiguous", func(b *testing.B) {
		var s seqSet
		for i := range b.N {
			s.add(uint64(i) + 1)
		}
	})
	b.Run("gap", func(b *testing.B) { benchGap(b, new(seqSet).add) })
	b.Run("gap-map-baseline", func(b *testing.B) { benchGap(b, new(mapSeqSet).add) })
}

// benchGap applies 1, then from 3 on: 2 never comes. The timed adds all
// find the out-of-order numbers full.
func benchGap(b *testing.B, add func(uint64)) {
	add(1)
	for i := range maxExtra {
		add(uint64(i) + 3)
	}
	b.ResetTimer()
	for i := range b.N {
		add(uint64(i) + 3 + maxExtra)
	}
}
