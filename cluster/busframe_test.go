package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

func encodeBusFrame(inc uint64, envs []envelope) []byte {
	var msgs []byte
	for _, e := range envs {
		msgs = appendBusMsg(msgs, e.Topic, e.Seq, e.Payload)
	}
	return busFrameBody(inc, msgs, len(envs))
}

func sameEnvelopes(a, b []envelope) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Inc != b[i].Inc || a[i].Topic != b[i].Topic || a[i].Seq != b[i].Seq || !bytes.Equal(a[i].Payload, b[i].Payload) {
			return false
		}
	}
	return true
}

func TestBusFrameRoundTrip(t *testing.T) {
	const inc = 1_733_000_000_123_456_789
	var many []envelope
	for i := range 30 { // 91 elements: an array16 header
		many = append(many, envelope{Inc: inc, Topic: fmt.Sprint("topic-", i%3), Seq: uint64(i + 1), Payload: bytes.Repeat([]byte{byte(i)}, i*10)})
	}
	for _, envs := range [][]envelope{
		{{Inc: inc, Topic: "inv", Seq: 1}},
		{{Inc: 1, Topic: "", Seq: 1 << 40, Payload: []byte("x")}, {Inc: 1, Topic: strings.Repeat("t", 40), Seq: 300, Payload: make([]byte, 70000)}},
		{{Inc: inc, Topic: strings.Repeat("u", 300), Seq: 70000, Payload: make([]byte, 300)}},
		many,
	} {
		got, err := decodeBusFrame(encodeBusFrame(envs[0].Inc, envs))
		if err != nil || !sameEnvelopes(got, envs) {
			t.Fatalf("round trip of %d messages: %v, %d decoded", len(envs), err, len(got))
		}
	}
	// An older sender's single envelope.
	old := envelope{Inc: inc, Topic: "inv", Seq: 7, Payload: []byte("p")}
	got, err := decodeBusFrame(envelopeBytes(t, old))
	if err != nil || !sameEnvelopes(got, []envelope{old}) {
		t.Fatalf("older envelope: %+v, %v", got, err)
	}
}

func TestBusFrameRejects(t *testing.T) {
	good := encodeBusFrame(5, []envelope{{Topic: "t", Seq: 1, Payload: []byte("abc")}})
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"not an array", []byte{0x01}, "expected an array or a map"},
		{"no messages", []byte{0x91, 5}, "an array of 1 elements"},
		{"a partial message", []byte{0x93, 5, 0xa1, 't', 1}, "an array of 3 elements"},
		{"cut", good[:len(good)-1], "need 3 bytes"},
		{"trailing", append(append([]byte{}, good...), 0xc0), "1 trailing bytes"},
		{"string seq", []byte{0x94, 5, 0xa0, 0xa0, 0xc0}, "seq: expected an unsigned integer"},
		{"negative incarnation", []byte{0x94, 0xff, 0xa0, 1, 0xc0}, "incarnation: expected an unsigned integer"},
		{"bin topic", []byte{0x94, 5, 0xc4, 0, 1, 0xc0}, "topic: expected a string"},
		{"string payload", []byte{0x94, 5, 0xa0, 1, 0xa0}, "payload: expected binary data"},
		{"lying count", []byte{0xdd, 0xff, 0xff, 0xff, 0xfd, 5, 0xa0, 1, 0xc0}, "topic: need 1 bytes"},
		{"lying payload", []byte{0x94, 5, 0xa0, 1, 0xc6, 0xff, 0xff, 0xff, 0xff}, "payload: need 4294967295 bytes"},
		{"bad map", []byte{0x81, 0xc1}, "malformed bus frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeBusFrame(tc.in)
			if err == nil || !errors.Is(err, errBusFrame) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeBusFrame feeds arbitrary bytes to the bus frame decoder: it
// must return messages or an error, never panic, and what it accepts as a
// batch must re-encode to a frame that decodes to the same messages.
func FuzzDecodeBusFrame(f *testing.F) {
	f.Add(encodeBusFrame(1, []envelope{{Topic: "inv", Seq: 1, Payload: []byte("k")}}))
	f.Add(encodeBusFrame(1<<62, []envelope{{Topic: "a", Seq: 1}, {Topic: "b", Seq: 300, Payload: make([]byte, 300)}, {Topic: strings.Repeat("c", 40), Seq: 1 << 33}}))
	f.Add(envelopeBytes(f, envelope{Inc: 9, Topic: "inv", Seq: 2, Payload: []byte("old")}))
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xfd, 5})
	f.Add([]byte{0x94, 5, 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		envs, err := decodeBusFrame(in)
		if err != nil {
			if !errors.Is(err, errBusFrame) {
				t.Fatalf("error %v does not wrap errBusFrame", err)
			}
			return
		}
		if len(envs) == 0 {
			t.Fatal("a frame decoded to no messages")
		}
		again, err := decodeBusFrame(encodeBusFrame(envs[0].Inc, envs))
		if err != nil || !sameEnvelopes(again, envs) {
			t.Fatalf("re-decoded %d messages (%v), want %d", len(again), err, len(envs))
		}
	})
}

// Messages published while another publish is being sent go out together:
// fifty publishes queued behind a send in progress reach each peer as one
// frame, delivered in order, and nothing is reported missed.
func TestBusBatchesWhatQueuesBehindASend(t *testing.T) {
	net := newNet(t, 11)
	nodes := memCluster(t, net, 3, patient)
	recs := subscribeAll(nodes, "inv")
	frames := func() (n uint64) {
		for _, nd := range nodes[1:] {
			n += nd.RPC().Stats().NotifyReceived.Load()
		}
		return n
	}
	bus := nodes[0].Bus()
	if err := bus.Publish("inv", []byte("first")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the first message everywhere", func() bool {
		a, _ := recs[1].counts()
		b, _ := recs[2].counts()
		return a == 1 && b == 1
	})
	before := frames()
	// A publish in progress: the others queue behind it.
	bus.pubMu.Lock()
	bus.sending = true
	bus.pubMu.Unlock()
	for i := range 50 {
		if err := bus.Publish("inv", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	bus.kick <- struct{}{} // what the publisher in progress does when done
	for _, r := range recs[1:] {
		testkit.Eventually(t, 10*time.Second, "51 messages", func() bool { n, _ := r.counts(); return n == 51 })
		r.mu.Lock()
		for i, m := range r.msgs {
			if m.Seq != uint64(i+1) || (i > 0 && string(m.Payload) != fmt.Sprint(i-1)) {
				t.Fatalf("message %d: %+v", i, m)
			}
		}
		if len(r.misses) != 0 {
			t.Fatalf("misses: %+v", r.misses)
		}
		r.mu.Unlock()
	}
	if got := frames() - before; got != 2 {
		t.Fatalf("50 queued messages reached 2 peers in %d frames, want 2", got)
	}
	bus.pubMu.Lock()
	sending := bus.sending
	bus.pubMu.Unlock()
	if sending {
		t.Fatal("the sender did not hand back once the queue was empty")
	}
}

// Publishers at once, with synchronous publishes among them: every
// message reaches every peer once, in each publisher's order, nothing is
// reported missed, and a synchronous publish is acknowledged.
func TestBusConcurrentPublishers(t *testing.T) {
	net := newNet(t, 12)
	nodes := memCluster(t, net, 3, patient)
	recs := subscribeAll(nodes, "inv")
	const pubs, each = 8, 40
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if p == 0 && i%10 == 9 {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					if notAcked, err := nodes[0].Bus().PublishSync(ctx, "inv", []byte{byte(p), byte(i)}); err != nil || len(notAcked) > 0 {
						t.Errorf("PublishSync: not acked by %v, %v", notAcked, err)
					}
					cancel()
					continue
				}
				if err := nodes[0].Bus().Publish("inv", []byte{byte(p), byte(i)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range recs[1:] {
		testkit.Eventually(t, 20*time.Second, "every message", func() bool { n, _ := r.counts(); return n == pubs*each })
		r.mu.Lock()
		last := map[byte]int{}
		for i, m := range r.msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("delivery %d has seq %d", i, m.Seq)
			}
			p, k := m.Payload[0], int(m.Payload[1])
			if prev, ok := last[p]; ok && k <= prev {
				t.Fatalf("publisher %d's message %d delivered after its %d", p, k, prev)
			}
			last[p] = k
		}
		if len(r.misses) != 0 {
			t.Fatalf("misses: %+v", r.misses)
		}
		r.mu.Unlock()
	}
}
