package dmap

import (
	"errors"
	"reflect"
	"testing"
)

func sampleRequest() request {
	return request{Track: true, Batches: []batch{{Partition: 7, Ops: []Op{
		{Code: CodeSet, Flags: FlagNX | FlagExpire, N: 1234, Key: "a", Args: [][]byte{[]byte("v")}},
		{Code: CodeHSet, Key: "h", Args: [][]byte{[]byte("f"), {}}},
		{Code: CodeScan, N: 5, M: 10, Args: [][]byte{[]byte("a*"), {}}},
	}}}}
}

func TestCodecRoundTrip(t *testing.T) {
	req := sampleRequest()
	got, err := decodeRequest(appendRequest(nil, &req))
	if err != nil || !reflect.DeepEqual(got, req) {
		t.Fatalf("request: %+v, %v", got, err)
	}
	rep := reply{Batches: []batchReply{{Status: statusOK, Epoch: 9, Results: []Result{
		{Int: -2}, {Nil: true}, {Value: []byte("x")}, {Err: ErrWrongType}, {Values: [][]byte{[]byte("a"), nil, {}}},
	}}}}
	gr, err := decodeReply(appendReply(nil, &rep))
	if err != nil || !reflect.DeepEqual(gr, rep) {
		t.Fatalf("reply: %+v, %v", gr, err)
	}
	repl := replication{Partition: 3, Epoch: 2, Full: true, Seq: 8, Records: []record{
		{Seq: 7, Key: "a", E: &entry{str: []byte("v"), expire: 99, pos: scanPos("a")}},
		{Seq: 8, Key: "h", E: &entry{hash: []field{{"f", []byte("1")}}, pos: scanPos("h")}},
		{Seq: 9, Key: "gone"}, {Seq: 10, Flush: true},
	}}
	gp, err := decodeReplication(appendReplication(nil, &repl))
	if err != nil || !reflect.DeepEqual(gp, repl) {
		t.Fatalf("replication: %+v, %v", gp, err)
	}
	inv := invalidation{Partition: 1, Seq: 2, Keys: []string{"a", "b"}}
	gi, err := decodeInvalidation(appendInvalidation(nil, &inv))
	if err != nil || !reflect.DeepEqual(gi, inv) {
		t.Fatalf("invalidation: %+v, %v", gi, err)
	}
}

// FuzzDecode feeds every decoder of the owner protocol arbitrary bytes:
// an error, never a panic, and what decodes re-encodes to a message that
// decodes the same.
func FuzzDecode(f *testing.F) {
	req := sampleRequest()
	f.Add(appendRequest(nil, &req))
	rep := reply{Batches: []batchReply{{Results: []Result{{Values: [][]byte{nil, {}}}}}}}
	f.Add(appendReply(nil, &rep))
	repl := replication{Records: []record{{Key: "k", E: &entry{hash: []field{{"f", nil}}}}}}
	f.Add(appendReplication(nil, &repl))
	f.Add([]byte{0, 1, 0, 2, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeRequest(b); err == nil {
			if r2, err := decodeRequest(appendRequest(nil, &r)); err != nil || !reflect.DeepEqual(r, r2) {
				t.Fatalf("request does not round-trip: %v", err)
			}
		}
		if r, err := decodeReply(b); err == nil {
			if _, err := decodeReply(appendReply(nil, &r)); err != nil {
				t.Fatalf("reply does not round-trip: %v", err)
			}
		}
		if r, err := decodeReplication(b); err == nil {
			if _, err := decodeReplication(appendReplication(nil, &r)); err != nil {
				t.Fatalf("replication does not round-trip: %v", err)
			}
		}
		_, _ = decodeInvalidation(b)
	})
}

func TestSlots(t *testing.T) {
	// Redis Cluster's documented examples.
	for key, want := range map[string]int{"foo": 12182, "bar": 5061, "{user1000}.following": Slot("user1000"), "foo{}{bar}": Slot("foo{}{bar}"), "123456789": 0x31C3 & (Slots - 1)} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	if HashTag("foo{{bar}}zap") != "{bar" || HashTag("foo{bar}{zap}") != "bar" {
		t.Error("hash tags")
	}
	prev := -1
	for p := range 271 {
		first, last := SlotRange(p, 271)
		if first != prev+1 || PartitionOfSlot(first, 271) != p || PartitionOfSlot(last, 271) != p {
			t.Fatalf("partition %d: slots %d-%d", p, first, last)
		}
		prev = last
	}
	if prev != Slots-1 {
		t.Fatalf("slots end at %d", prev)
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{{"*", "x", true}, {"h?llo", "hello", true}, {"h[ae]llo", "hallo", true}, {"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true}, {"a\\*", "a*", true}, {"a\\*", "ab", false}, {"s:*", "s:1", true}, {"*x", "abc", false}} {
		if Match(c.p, c.s) != c.ok {
			t.Errorf("Match(%q, %q) != %v", c.p, c.s, c.ok)
		}
	}
}

func TestReplsCodec(t *testing.T) {
	r1 := appendReplication(nil, &replication{Partition: 3, Epoch: 7, Seq: 2, Records: []record{{Seq: 2, Key: "a", E: &entry{}}}})
	r2 := appendReplication(nil, &replication{Partition: 9, Epoch: 7, Full: true, Seq: 5})
	msg := appendRepls(nil, [][]byte{r1, r2})
	got, err := decodeRepls(msg)
	if err != nil || len(got) != 2 || string(got[0]) != string(r1) || string(got[1]) != string(r2) {
		t.Fatalf("decodeRepls: %q %v", got, err)
	}
	rep := appendReplsReply(nil, []string{"", "not the backup"})
	msgs, err := decodeReplsReply(rep, 2)
	if err != nil || msgs[0] != "" || msgs[1] != "not the backup" {
		t.Fatalf("decodeReplsReply: %q %v", msgs, err)
	}
	if _, err := decodeReplsReply(rep, 3); !errors.Is(err, ErrCodec) {
		t.Fatalf("an answer for 2 of 3: %v", err)
	}
	// Every truncation and a trailing byte are refused without a panic.
	for i := range len(msg) {
		if _, err := decodeRepls(msg[:i]); err == nil {
			t.Fatalf("decodeRepls of %d of %d bytes: no error", i, len(msg))
		}
	}
	for i := range len(rep) {
		if _, err := decodeReplsReply(rep[:i], 2); err == nil {
			t.Fatalf("decodeReplsReply of %d of %d bytes: no error", i, len(rep))
		}
	}
	if _, err := decodeRepls(append(msg, 0)); err == nil {
		t.Fatal("a trailing byte accepted")
	}
}
