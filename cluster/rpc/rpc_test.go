package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/cluster/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// registry resolves node names for a set of test nodes.
type registry struct {
	mu    sync.Mutex
	addrs map[string]string
}

func (r *registry) resolve(name string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.addrs[name]
	return a, ok
}

func (r *registry) start(t testing.TB, name string, netw wire.Network) *Node {
	t.Helper()
	n, err := New(Config{Name: name, Network: netw, ListenAddr: "127.0.0.1:0", Resolve: r.resolve})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	if r.addrs == nil {
		r.addrs = map[string]string{}
	}
	r.addrs[name] = n.Addr()
	r.mu.Unlock()
	t.Cleanup(func() { n.Close() })
	return n
}

func echo(_ context.Context, from string, body []byte) ([]byte, error) {
	return append([]byte(from+":"), body...), nil
}

func TestCallAndNotify(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	b.Handle("echo", echo)
	b.Handle("fail", func(context.Context, string, []byte) ([]byte, error) { return nil, errors.New("nope") })
	b.Handle("panic", func(context.Context, string, []byte) ([]byte, error) { panic("boom") })
	got := make(chan string, 10)
	b.HandleOneway("note", func(from string, body []byte) { got <- from + "/" + string(body) })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := a.Call(ctx, "b", "echo", []byte("hi"))
	if err != nil || string(resp) != "a:hi" {
		t.Fatalf("echo: %q %v", resp, err)
	}
	var re *RemoteError
	if _, err := a.Call(ctx, "b", "fail", nil); !errors.As(err, &re) || re.Msg != "nope" {
		t.Fatalf("fail: %v", err)
	}
	if _, err := a.Call(ctx, "b", "panic", nil); !errors.As(err, &re) {
		t.Fatalf("panic: %v", err)
	}
	if _, err := a.Call(ctx, "b", "missing", nil); !errors.As(err, &re) {
		t.Fatalf("missing handler: %v", err)
	}
	if _, err := a.Call(ctx, "nobody", "echo", nil); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := a.Notify("b", "note", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		if s := <-got; s != fmt.Sprintf("a/%d", i) {
			t.Fatalf("notify %d: got %q", i, s)
		}
	}
}

func TestCallDeadlineReachesHandler(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	sawDeadline := make(chan bool, 1)
	b.Handle("slow", func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		_, ok := ctx.Deadline()
		sawDeadline <- ok
		<-ctx.Done()
		return nil, ctx.Err()
	})
	b.Handle("echo", echo)
	// Connect first, without a short deadline: on a loaded machine the
	// dial alone can outlast one, and the request would never be sent.
	warm, cancelWarm := context.WithTimeout(context.Background(), time.Minute)
	defer cancelWarm()
	if _, err := a.Call(warm, "b", "echo", nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// Either the caller's deadline fires first, or the handler's (the same
	// deadline, carried over) and its error comes back.
	_, err := a.Call(ctx, "b", "slow", nil)
	var re *RemoteError
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &re) && re.Msg == context.DeadlineExceeded.Error()) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	select {
	case ok := <-sawDeadline:
		if !ok {
			t.Fatal("handler's context had no deadline")
		}
	case <-time.After(time.Minute):
		t.Fatalf("the request never reached the handler (served %d)", b.Stats().Served.Load())
	}
}

// Both nodes dial each other at once, many times: afterwards each side uses
// one connection, and no call fails.
func TestSimultaneousDialsConvergeOnOneConnection(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	a.Handle("echo", echo)
	b.Handle("echo", echo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 20; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); _, err := a.Call(ctx, "b", "echo", nil); errs <- err }()
		go func() { defer wg.Done(); _, err := b.Call(ctx, "a", "echo", nil); errs <- err }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return liveConns(a) == 1 && liveConns(b) == 1 }, "one connection per side")
	if pa, pb := a.preferred("b"), b.preferred("a"); pa == nil || pb == nil || !pa.dialedBySelf || pb.dialedBySelf {
		t.Fatalf("both sides must prefer the connection dialed by %q", "a")
	}
}

func (n *Node) preferred(peer string) *conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.peers[peer]; p != nil {
		return p.conn
	}
	return nil
}

func liveConns(n *Node) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReconnectAfterPeerRestart(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	b.Handle("echo", echo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Call(ctx, "b", "echo", nil); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b2 := reg.start(t, "b", &wire.TCP{})
	b2.Handle("echo", func(context.Context, string, []byte) ([]byte, error) { return []byte("new"), nil })
	waitFor(t, func() bool {
		resp, err := a.Call(ctx, "b", "echo", nil)
		return err == nil && string(resp) == "new"
	}, "a call to reach the restarted peer")
}

func TestInFlightCallFailsWhenConnectionBreaks(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	entered := make(chan struct{})
	b.Handle("hang", func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		close(entered)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	errc := make(chan error, 1)
	go func() { _, err := a.Call(context.Background(), "b", "hang", nil); errc <- err }()
	<-entered
	b.Close()
	if err := <-errc; !errors.Is(err, ErrConnLost) {
		t.Fatalf("got %v, want ErrConnLost", err)
	}
}

// Garbage and an oversized length on a raw socket close that connection;
// the node keeps serving others.
func TestMalformedFrameClosesOnlyThatConnection(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{MaxFrameSize: 1 << 16})
	b := reg.start(t, "b", &wire.TCP{})
	a.Handle("echo", echo)
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		binary.BigEndian.AppendUint32(nil, 1<<30),
		{0, 0, 0, 3, 0x95, 0xc1, 0xc1},
	} {
		c, err := net.Dial("tcp", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(garbage)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var buf [1]byte
		if _, err := c.Read(buf[:]); err == nil {
			t.Fatalf("connection sending %q was answered instead of closed", garbage)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection sending %q was left open", garbage)
		}
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.Call(ctx, "a", "echo", nil); err != nil {
		t.Fatalf("node stopped serving after garbage: %v", err)
	}
	if a.Stats().ProtocolErrors.Load() == 0 {
		t.Fatal("protocol errors not counted")
	}
}

func TestCloseTwiceAndAfterClose(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Call(context.Background(), "a", "x", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after close: %v", err)
	}
	if err := a.Notify("a", "x", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("notify after close: %v", err)
	}
}

// slowDialer is a network whose dials take dialDelay to connect, then
// hold the peer's hello (the dialed side's first frame) for helloDelay:
// a dialing goroutine that waits for a CPU on a loaded machine.
type slowDialer struct {
	wire.Network
	dialDelay, helloDelay time.Duration
}

func (s slowDialer) Dial(ctx context.Context, addr string) (wire.Conn, error) {
	time.Sleep(s.dialDelay)
	c, err := s.Network.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &slowHello{Conn: c, delay: s.helloDelay}, nil
}

type slowHello struct {
	wire.Conn
	delay time.Duration
	once  sync.Once
}

func (c *slowHello) Recv() (wire.Frame, error) {
	f, err := c.Conn.Recv()
	c.once.Do(func() { time.Sleep(c.delay) })
	return f, err
}

// Simultaneous dials where the winner's dialer is slow to finish its
// hello: the loser's dialer has switched to the winner long before, while
// the other side still sends on the loser. Every one-way message sent in
// the meantime arrives, none fails, and the pair ends on one connection.
// (When the loser was closed a fixed second after it lost, the messages
// sent on it after that second were lost.)
func TestRetiredTwinLosesNothing(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", slowDialer{Network: &wire.TCP{}, dialDelay: 300 * time.Millisecond, helloDelay: 1500 * time.Millisecond})
	b := reg.start(t, "b", &wire.TCP{})
	var mu sync.Mutex
	got := map[string]bool{}
	b.HandleOneway("m", func(_ string, body []byte) {
		mu.Lock()
		got[string(body)] = true
		mu.Unlock()
	})
	a.HandleOneway("m", func(string, []byte) {})
	// a starts dialing b (the winner: a sorts first), slowly; meanwhile b
	// dials a, and a sends on that connection, the loser.
	if err := a.Notify("b", "m", []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := b.Notify("a", "m", nil); err != nil {
		t.Fatal(err)
	}
	const n = 400
	failed := 0
	for i := 1; i < n; i++ {
		time.Sleep(5 * time.Millisecond)
		if err := a.Notify("b", "m", []byte(fmt.Sprint(i))); err != nil {
			failed++
			t.Logf("notify %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		received := len(got)
		mu.Unlock()
		if received+failed == n && liveConns(a) == 1 && liveConns(b) == 1 {
			if failed > 0 || received != n {
				t.Fatalf("%d of %d messages arrived, %d sends failed", received, n, failed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages arrived (%d sends failed); connections a %d, b %d", received, n, failed, liveConns(a), liveConns(b))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := a.Stats(); st.Dials.Load() != 1 || st.ConnsAccepted.Load() != 1 {
		t.Fatalf("a dialed %d times and accepted %d connections: the test did not make twins", st.Dials.Load(), st.ConnsAccepted.Load())
	}
}

// Calls recycle their state once answered: with callers that give up on
// slow requests (whose responses then arrive late), others that get errors
// and others answered at once, all at the same time on one connection,
// every answer reaches the call that asked for it.
func TestCallsGetTheirOwnAnswers(t *testing.T) {
	var reg registry
	a := reg.start(t, "a", &wire.TCP{})
	b := reg.start(t, "b", &wire.TCP{})
	release := make(chan struct{})
	b.Handle("echo", func(_ context.Context, _ string, body []byte) ([]byte, error) {
		switch body[0] {
		case 's': // slow: answered after its caller gave up
			<-release
		case 'e':
			return nil, fmt.Errorf("error for %s", body)
		}
		return body, nil
	})
	const callers, calls = 16, 200
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				kind := "ok"[i%2 : i%2+1] // 'o' or 'k': answered at once
				switch i % 10 {
				case 3:
					kind = "s"
				case 7:
					kind = "e"
				}
				body := []byte(fmt.Sprintf("%s-%d-%d", kind, g, i))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if kind == "s" {
					ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
				}
				resp, err := a.Call(ctx, "b", "echo", body)
				cancel()
				var re *RemoteError
				switch {
				case kind == "s":
					if !errors.Is(err, context.DeadlineExceeded) {
						errs <- fmt.Errorf("slow call %s: %q, %v", body, resp, err)
						return
					}
				case kind == "e":
					if !errors.As(err, &re) || re.Msg != "error for "+string(body) {
						errs <- fmt.Errorf("failing call %s: %q, %v", body, resp, err)
						return
					}
				case err != nil || string(resp) != string(body):
					errs <- fmt.Errorf("call %s answered %q, %v", body, resp, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(release) // the late answers arrive now, for calls long given up
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Calls made after the late answers still get their own.
	for i := range 100 {
		body := []byte(fmt.Sprintf("o-after-%d", i))
		resp, err := a.Call(context.Background(), "b", "echo", body)
		if err != nil || string(resp) != string(body) {
			t.Fatalf("call %s answered %q, %v", body, resp, err)
		}
	}
}
