package l2cache

import (
	"context"
	"errors"
	"reflect"
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
