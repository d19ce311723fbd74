package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
)

// Requests sent with Go from one goroutine reach an inline handler in the
// order they were sent, and each gets its own response.
func TestGoInOrderToInlineHandler(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	var mu sync.Mutex
	var seen []uint64
	b.HandleInline("seq", func(_ context.Context, _ string, body []byte) ([]byte, error) {
		mu.Lock()
		seen = append(seen, binary.BigEndian.Uint64(body))
		mu.Unlock()
		return body, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 2000
	pend := make([]*Pending, n)
	for i := range n {
		pend[i] = a.Go(ctx, "b", "seq", binary.BigEndian.AppendUint64(nil, uint64(i)))
	}
	for i, p := range pend {
		resp, err := p.Wait(ctx)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !bytes.Equal(resp, binary.BigEndian.AppendUint64(nil, uint64(i))) {
			t.Fatalf("request %d got the response %x", i, resp)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, v := range seen {
		if v != uint64(i) {
			t.Fatalf("the handler saw request %d in place %d", v, i)
		}
	}
	if len(seen) != n {
		t.Fatalf("the handler saw %d requests, want %d", len(seen), n)
	}
}

// An inline handler learns the caller's deadline (as a value), its errors
// and panics reach the caller as from any handler, and a Go to an unknown
// peer fails without blocking.
func TestInlineHandlerDeadlineAndErrors(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	b.HandleInline("deadline", func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return []byte("none"), nil
		}
		return []byte(time.Until(dl).Round(time.Second).String()), nil
	})
	b.HandleInline("panic", func(context.Context, string, []byte) ([]byte, error) { panic("boom") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "b", "deadline", nil)
	if err != nil || string(got) != "30s" {
		t.Fatalf("deadline seen by the inline handler: %q, %v", got, err)
	}
	got, err = a.Call(context.Background(), "b", "deadline", nil)
	if err != nil || string(got) != "none" {
		t.Fatalf("without a deadline: %q, %v", got, err)
	}
	var re *RemoteError
	if _, err := a.Call(ctx, "b", "panic", nil); !errorsAs(err, &re) {
		t.Fatalf("panicking inline handler: %v", err)
	}
	// The connection survived the panic.
	if _, err := a.Call(ctx, "b", "deadline", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Go(ctx, "nobody", "deadline", nil).Wait(ctx); err == nil {
		t.Fatal("Go to an unknown peer succeeded")
	}
}

// An inline handler that would block returns ErrWouldBlock: that request
// is served again on a goroutine of its own (with a cancellable context
// that carries the caller's deadline), and the connection's reader goes on
// serving the requests after it meanwhile.
func TestInlineHandlerWouldBlock(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	release := make(chan struct{})
	var inlineCalls, goroutineCalls atomicInt
	b.HandleInline("h", func(ctx context.Context, _ string, body []byte) ([]byte, error) {
		if string(body) != "wait" {
			return []byte("quick"), nil
		}
		if Inline(ctx) {
			inlineCalls.add()
			return nil, ErrWouldBlock
		}
		goroutineCalls.add()
		if _, ok := ctx.Deadline(); !ok {
			return nil, errors.New("no deadline on the goroutine")
		}
		select {
		case <-release:
			return []byte("waited"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := b.Stats().Served.Load()
	wait := a.Go(ctx, "b", "h", []byte("wait"))
	// The reader is not held by the waiting request.
	for i := range 20 {
		got, err := a.Call(ctx, "b", "h", []byte("now"))
		if err != nil || string(got) != "quick" {
			t.Fatalf("request %d behind a blocked one: %q, %v", i, got, err)
		}
	}
	close(release)
	got, err := wait.Wait(ctx)
	if err != nil || string(got) != "waited" {
		t.Fatalf("the request served on a goroutine: %q, %v", got, err)
	}
	if inlineCalls.get() != 1 || goroutineCalls.get() != 1 {
		t.Fatalf("the handler ran %d times inline and %d on a goroutine, want 1 and 1", inlineCalls.get(), goroutineCalls.get())
	}
	if n := b.Stats().Served.Load() - served; n != 21 {
		t.Fatalf("Served counted %d requests, want 21", n)
	}
}

type atomicInt struct {
	mu sync.Mutex
	n  int
}

func (a *atomicInt) add() { a.mu.Lock(); a.n++; a.mu.Unlock() }
func (a *atomicInt) get() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// Large frames sent while the peer is not reading: Send does not block,
// and every frame arrives whole and in order once the peer reads.
func TestSendToSlowReader(t *testing.T) {
	// The write deadline is not what this test is about: reading 24 MiB
	// under the race detector on a loaded machine can outlast the default
	// 10 s, and the writer would give up.
	netw := &wire.TCP{WriteTimeout: 2 * time.Minute}
	ln, err := netw.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan wire.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := netw.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-accepted
	defer srv.Close()
	const frames, size = 24, 1 << 20 // more than the socket buffers hold
	for i := range frames {
		body := bytes.Repeat([]byte{byte(i)}, size)
		t0 := time.Now()
		if err := c.Send(&wire.Frame{Kind: wire.KindOneway, Type: "big", Body: body}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if d := time.Since(t0); d > 5*time.Second {
			t.Fatalf("send %d blocked for %v", i, d)
		}
	}
	for i := range frames {
		f, err := srv.Recv()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(f.Body) != size || f.Body[0] != byte(i) || f.Body[size-1] != byte(i) {
			t.Fatalf("frame %d: %d bytes starting %d", i, len(f.Body), f.Body[0])
		}
	}
}

func errorsAs(err error, target **RemoteError) bool { return errors.As(err, target) }
