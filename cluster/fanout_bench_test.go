package cluster

// Bus fan-out as the cluster grows: 8, 32 and 64 in-process nodes over real
// loopback sockets, each with its own frame counters.
//
//	go test -run '^$' -bench 'BusFanoutScale|Converge' -benchtime 200x -count 1 ./cluster
//
// SHOAL_BENCH_NODES=8,32 picks the sizes (default 8,32,64).

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/wire"
	"github.com/shoal-dev/shoal/internal/testkit"
)

func benchSizes(b *testing.B) []int {
	s := os.Getenv("SHOAL_BENCH_NODES")
	if s == "" {
		return []int{8, 32, 64}
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			b.Fatalf("SHOAL_BENCH_NODES=%q: want sizes of at least 2, comma-separated", s)
		}
		out = append(out, n)
	}
	return out
}

// scaleBenchRig is n nodes on the loopback preset over TCP, each counting
// its peer RPC frames.
type scaleBenchRig struct {
	nodes []*Node
	stats []*wire.Stats
	join  time.Duration // from the first join to all seeing all alive
}

func startScaleBenchRig(b *testing.B, n int) *scaleBenchRig {
	r := &scaleBenchRig{}
	b.Cleanup(r.close)
	for i := 1; i <= n; i++ {
		cfg := *DefaultLoopbackConfig()
		cfg.Name = fmt.Sprintf("n%d", i)
		cfg.Logger = testLogger(b)
		st := &wire.Stats{}
		cfg.Network = &wire.TCP{Stats: st}
		nd, err := Start(cfg)
		if err != nil {
			b.Fatal(err)
		}
		r.nodes, r.stats = append(r.nodes, nd), append(r.stats, st)
	}
	t0 := time.Now()
	seed := []string{r.nodes[0].GossipAddr()}
	for _, nd := range r.nodes[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := nd.Join(ctx, seed)
		cancel()
		if err != nil {
			b.Fatalf("%s join: %v", nd.Name(), err)
		}
	}
	for _, nd := range r.nodes {
		testkit.Eventually(b, 2*time.Minute, fmt.Sprintf("%s to see %d alive", nd.Name(), n), func() bool {
			return len(nd.peerNames()) == n-1
		})
	}
	r.join = time.Since(t0)
	return r
}

// close closes the nodes all at once.
func (r *scaleBenchRig) close() {
	var wg sync.WaitGroup
	for _, nd := range r.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nd.Close() }()
	}
	wg.Wait()
	r.nodes = nil
}

// scaleProbe counts the deliveries of the burst in flight: a payload
// carries its burst's number in its first 8 bytes.
type scaleProbe struct {
	cur  atomic.Uint64
	left atomic.Int64
	done chan time.Time
}

func (p *scaleProbe) deliver(payload []byte) {
	if len(payload) < 8 || binary.BigEndian.Uint64(payload) != p.cur.Load() {
		return
	}
	if p.left.Add(-1) == 0 {
		p.done <- time.Now()
	}
}

func (p *scaleProbe) arm(deliveries int) []byte {
	it := p.cur.Load() + 1
	msg := binary.BigEndian.AppendUint64(make([]byte, 0, 64), it)
	msg = msg[:64]
	p.cur.Store(it)
	p.left.Store(int64(deliveries))
	return msg
}

// BenchmarkBusFanoutScale publishes from node 0 of 8, 32 and 64 and times
// until every other node has delivered (bus), against the same messages
// sent by node 0 as one-way RPC messages to each peer (raw: no numbering,
// no receiver state machine), interleaved in one loop. "one" sends one
// message at a time; "burst16" sends 16 at once, from 16 goroutines (16
// requests that each invalidate an entity). Besides the latencies (to the
// last delivery of the burst) it reports node 0's peer RPC frames, bytes
// and write syscalls per message, and the frames the receivers read per
// message each.
func BenchmarkBusFanoutScale(b *testing.B) {
	for _, n := range benchSizes(b) {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			r := startScaleBenchRig(b, n)
			bus, raw := &scaleProbe{done: make(chan time.Time, 1)}, &scaleProbe{done: make(chan time.Time, 1)}
			for _, nd := range r.nodes[1:] {
				nd.Bus().Subscribe("bench", SubscriberFuncs{OnMessage: func(m Message) { bus.deliver(m.Payload) }})
				nd.RPC().HandleOneway("bench.raw", func(_ string, body []byte) { raw.deliver(body) })
			}
			peers := r.nodes[0].peerNames()
			slices.Sort(peers)
			pub := r.nodes[0]
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			send := func(b *testing.B, isRaw bool, burst int) time.Duration {
				probe := bus
				if isRaw {
					probe = raw
				}
				msg := probe.arm(burst * (n - 1))
				one := func() {
					if !isRaw {
						if err := pub.Bus().Publish("bench", msg); err != nil {
							b.Error(err)
						}
						return
					}
					for _, p := range peers {
						if err := pub.RPC().Notify(p, "bench.raw", msg); err != nil {
							b.Error(err)
						}
					}
				}
				t0 := time.Now()
				if burst == 1 {
					one()
				} else {
					var wg sync.WaitGroup
					for range burst {
						wg.Add(1)
						go func() { defer wg.Done(); one() }()
					}
					wg.Wait()
				}
				timer.Reset(30 * time.Second)
				select {
				case t1 := <-probe.done:
					timer.Stop()
					return t1.Sub(t0)
				case <-timer.C:
					var diag []string
					for _, nd := range r.nodes {
						bs, rs := nd.Bus().Stats(), nd.RPC().Stats()
						if v := bs.MissedReports.Load() + bs.Refused.Load() + bs.SendErrors.Load() + rs.DialErrors.Load(); v > 0 {
							diag = append(diag, fmt.Sprintf("%s: missed %d refused %d send errors %d dial errors %d",
								nd.Name(), bs.MissedReports.Load(), bs.Refused.Load(), bs.SendErrors.Load(), rs.DialErrors.Load()))
						}
					}
					b.Fatalf("%d nodes: %d of %d deliveries missing after 30s (raw=%v); %s", n, probe.left.Load(), burst*(n-1), isRaw, strings.Join(diag, "; "))
				}
				return 0
			}
			// Open node 0's connections before anything is timed.
			for range 3 {
				send(b, false, 1)
				send(b, true, 1)
			}
			// What the idle nodes cost, over 3 s.
			cpu0, t0 := processCPU(), time.Now()
			time.Sleep(3 * time.Second)
			idle := float64(processCPU()-cpu0) / float64(time.Since(t0))
			b.Run("converge", func(b *testing.B) {
				// The rig's own join, reported once per size.
				for range b.N {
				}
				b.ReportMetric(r.join.Seconds()*1000, "all-alive-ms")
				b.ReportMetric(100*idle/float64(n), "idle-cpu-%/node")
			})
			for _, burst := range []int{1, 16} {
				name := "one"
				if burst > 1 {
					name = fmt.Sprintf("burst%d", burst)
				}
				b.Run(name, func(b *testing.B) {
					lat := map[bool][]time.Duration{}
					var out [2]wire.StatsSnapshot
					var in [2]uint64
					b.ResetTimer()
					for range b.N {
						for k, isRaw := range []bool{false, true} {
							s0, i0 := r.stats[0].Snapshot(), r.framesIn()
							lat[isRaw] = append(lat[isRaw], send(b, isRaw, burst))
							s1 := r.stats[0].Snapshot()
							out[k].FramesOut += s1.FramesOut - s0.FramesOut
							out[k].BytesOut += s1.BytesOut - s0.BytesOut
							out[k].Writes += s1.Writes - s0.Writes
							in[k] += r.framesIn() - i0
						}
					}
					b.StopTimer()
					msgs := float64(b.N * burst)
					for k, name := range []string{"bus", "raw"} {
						fanoutLatencies(b, name, lat[k == 1])
						b.ReportMetric(float64(out[k].FramesOut)/msgs, name+"-frames/msg")
						b.ReportMetric(float64(out[k].BytesOut)/msgs, name+"-B/msg")
						b.ReportMetric(float64(out[k].Writes)/msgs, name+"-writes/msg")
						b.ReportMetric(float64(in[k])/msgs/float64(n-1), name+"-frames-in/msg/node")
					}
				})
			}
		})
	}
}

// framesIn is the frames every node but node 0 has read.
func (r *scaleBenchRig) framesIn() uint64 {
	var s uint64
	for _, st := range r.stats[1:] {
		s += st.FramesIn.Load()
	}
	return s
}

// BenchmarkClose starts n nodes, lets them converge, and closes them:
// one after another (each leaves, then the next: how the tests' cleanups
// and the first scale test closed them), or all at once (how 'shoal up'
// stops its nodes and the scale test does now). It reports the time to
// close them all and the longest single Close.
func BenchmarkClose(b *testing.B) {
	for _, n := range benchSizes(b) {
		for _, mode := range []string{"one-by-one", "all-at-once"} {
			b.Run(fmt.Sprintf("nodes=%d/%s", n, mode), func(b *testing.B) {
				var total, longest time.Duration
				for range b.N {
					b.StopTimer()
					r := startScaleBenchRig(b, n)
					b.StartTimer()
					t0 := time.Now()
					var mu sync.Mutex
					closeOne := func(nd *Node) {
						s := time.Now()
						nd.Close()
						mu.Lock()
						longest = max(longest, time.Since(s))
						mu.Unlock()
					}
					if mode == "one-by-one" {
						for _, nd := range r.nodes {
							closeOne(nd)
						}
					} else {
						var wg sync.WaitGroup
						for _, nd := range r.nodes {
							wg.Add(1)
							go func() { defer wg.Done(); closeOne(nd) }()
						}
						wg.Wait()
					}
					total += time.Since(t0)
					r.nodes = nil
				}
				b.ReportMetric(total.Seconds()/float64(b.N), "close-all-s")
				b.ReportMetric(longest.Seconds(), "longest-close-s")
			})
		}
	}
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
