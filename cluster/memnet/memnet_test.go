package memnet

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"

	"github.com/shoal-dev/shoal/cluster/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair connects a client on 10.0.0.1 to a listener on 10.0.0.2.
func pair(t *testing.T, n *Network) (client, server wire.Conn) {
	t.Helper()
	ln, err := n.Host("10.0.0.2").Listen("10.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err = n.Host("10.0.0.1").Dial(context.Background(), ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func send(t *testing.T, c wire.Conn, ids ...uint64) {
	t.Helper()
	for _, id := range ids {
		if err := c.Send(&wire.Frame{Kind: wire.KindOneway, ID: id, Type: "bus", Body: []byte{byte(id)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// recvIDs reads frames until want have arrived or quiet passes without one.
func recvIDs(c wire.Conn, want int, quiet time.Duration) []uint64 {
	var ids []uint64
	got := make(chan wire.Frame)
	go func() {
		for {
			f, err := c.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- f
		}
	}()
	for len(ids) < want {
		select {
		case f, ok := <-got:
			if !ok {
				return ids
			}
			ids = append(ids, f.ID)
		case <-time.After(quiet):
			c.Close()
			for range got {
			}
			return ids
		}
	}
	c.Close()
	for range got {
	}
	return ids
}

func seq(n int) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = uint64(i + 1)
	}
	return s
}

func TestFramesInOrderWithoutFaults(t *testing.T) {
	n := New(1)
	defer n.Close()
	c, s := pair(t, n)
	send(t, c, seq(100)...)
	if got := recvIDs(s, 100, time.Second); !slices.Equal(got, seq(100)) {
		t.Fatalf("got %v", got)
	}
}

func TestDropAndDuplicate(t *testing.T) {
	n := New(1)
	defer n.Close()
	c, s := pair(t, n)
	n.SetFaults(Faults{DropRate: 1})
	send(t, c, seq(10)...)
	n.SetFaults(Faults{DuplicateRate: 1})
	send(t, c, 11, 12)
	if got := recvIDs(s, 4, 200*time.Millisecond); !slices.Equal(got, []uint64{11, 11, 12, 12}) {
		t.Fatalf("got %v", got)
	}
	if st := n.Stats(); st.Dropped != 10 || st.Duplicated != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDelayReorders(t *testing.T) {
	n := New(3)
	defer n.Close()
	c, s := pair(t, n)
	n.SetFaults(Faults{DelayMax: 20 * time.Millisecond})
	send(t, c, seq(50)...)
	got := recvIDs(s, 50, time.Second)
	if len(got) != 50 || slices.IsSorted(got) {
		t.Fatalf("got %d frames, sorted=%v: delay should reorder some", len(got), slices.IsSorted(got))
	}
}

func TestSameSeedSameDecisions(t *testing.T) {
	run := func() []uint64 {
		n := New(42)
		defer n.Close()
		c, s := pair(t, n)
		n.SetFaults(Faults{DropRate: 0.5})
		send(t, c, seq(100)...)
		return recvIDs(s, 100, 100*time.Millisecond)
	}
	a, b := run(), run()
	if !slices.Equal(a, b) || len(a) == 0 || len(a) == 100 {
		t.Fatalf("two runs with one seed differ or drop nothing/everything: %d vs %d frames", len(a), len(b))
	}
}

func TestPartitionAndMatch(t *testing.T) {
	n := New(1)
	defer n.Close()
	c, s := pair(t, n)
	n.Partition([]string{"10.0.0.1"}, []string{"10.0.0.2"})
	send(t, c, 1)
	if _, err := n.Host("10.0.0.1").Dial(context.Background(), "10.0.0.2:20000"); err == nil {
		t.Fatal("dial across a partition succeeded")
	}
	n.Heal()
	n.SetFaults(Faults{DropRate: 1, Match: func(tr Traffic) bool { return tr.Kind == Frame && tr.Frame.ID == 3 }})
	send(t, c, 2, 3, 4)
	if got := recvIDs(s, 2, 200*time.Millisecond); !slices.Equal(got, []uint64{2, 4}) {
		t.Fatalf("got %v", got)
	}
	if st := n.Stats(); st.Blocked != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseEndsRecv(t *testing.T) {
	n := New(1)
	defer n.Close()
	c, s := pair(t, n)
	send(t, c, 1)
	c.Close()
	if f, err := s.Recv(); err != nil || f.ID != 1 {
		t.Fatalf("queued frame after close: %v %v", f, err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after peer close: %v", err)
	}
	if err := c.Send(&wire.Frame{Kind: wire.KindOneway}); !errors.Is(err, wire.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

func TestStreamDeadline(t *testing.T) {
	n := New(1)
	defer n.Close()
	a, _ := n.Host("10.0.0.1").Transport(0)
	b, _ := n.Host("10.0.0.2").Transport(0)
	defer a.Shutdown()
	defer b.Shutdown()
	c, err := a.DialTimeout(b.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-b.StreamCh()
	defer srv.Close()
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q %v", buf, err)
	}
	srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var ne net.Error
	if _, err := srv.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v", err)
	}
}

// Real memberlist over the in-memory network: join, isolate one host,
// heal.
func TestMemberlistOverMemnet(t *testing.T) {
	n := New(1)
	defer n.Close()
	var lists []*memberlist.Memberlist
	for i, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		tr, err := n.Host(ip).Transport(7946)
		if err != nil {
			t.Fatal(err)
		}
		c := memberlist.DefaultLocalConfig()
		c.Name, c.Transport = ip, tr
		c.ProbeInterval, c.ProbeTimeout, c.GossipInterval = 50*time.Millisecond, 25*time.Millisecond, 20*time.Millisecond
		c.PushPullInterval, c.SuspicionMult = 200*time.Millisecond, 2
		c.Logger = log.New(io.Discard, "", 0)
		if os.Getenv("SHOAL_TEST_LOG") != "" {
			c.Logger = log.New(os.Stderr, ip+" ", 0)
		}
		m, err := memberlist.Create(c)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Shutdown()
		if i > 0 {
			if _, err := m.Join([]string{"10.0.0.1:7946"}); err != nil {
				t.Fatal(err)
			}
		}
		lists = append(lists, m)
	}
	wait := func(m *memberlist.Memberlist, want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for m.NumMembers() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d members, want %d", m.LocalNode().Name, m.NumMembers(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, m := range lists {
		wait(m, 3)
	}
	n.Isolate("10.0.0.3")
	wait(lists[0], 2)
	wait(lists[1], 2)
	n.Heal()
	// The isolated node refutes its death once gossip reaches it again.
	if _, err := lists[2].Join([]string{"10.0.0.1:7946"}); err != nil {
		t.Fatal(err)
	}
	for _, m := range lists {
		wait(m, 3)
	}
}
