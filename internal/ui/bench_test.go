package ui_test

import (
	"bufio"
	"context"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRefresh is one sampler tick of a node's dashboard — a sample,
// each watched page's live part rendered, the update queued and written
// to every open stream — with no stream, and with 10 open dashboards (two
// on each live page) read by clients in this process. cpu-µs/tick is the
// process's CPU time (every goroutine: the handlers writing the streams
// and the clients reading them too) per tick; %core@5s is that at the
// default interval of 5 s, as a share of one core.
func BenchmarkRefresh(b *testing.B) {
	for _, streams := range []int{0, 10} {
		b.Run(map[int]string{0: "streams=0", 10: "streams=10"}[streams], func(b *testing.B) {
			s := node(b)
			u := s.UI()
			var readers []*sse
			if streams > 0 {
				br := newBrowser(b, s)
				br.login("root", "root-password")
				pages := []string{"cluster", "partitions", "caches", "git", "jobs"}
				for i := range streams {
					readers = append(readers, br.events(pages[i%len(pages)]))
				}
				deadline := time.Now().Add(30 * time.Second)
				for u.Streams() < streams {
					if time.Now().After(deadline) {
						b.Fatalf("%d streams open, want %d", u.Streams(), streams)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for _, r := range readers {
				go func() {
					sc := bufio.NewScanner(r.resp.Body)
					sc.Buffer(make([]byte, 64<<10), 4<<20)
					for sc.Scan() && ctx.Err() == nil {
					}
				}()
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				u.Refresh()
			}
			b.StopTimer()
			per := (cpuTime() - cpu0) / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds()), "cpu-µs/tick")
			b.ReportMetric(100*per.Seconds()/5, "%core@5s")
			b.ReportMetric(float64(u.Streams()), "streams-at-end")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
