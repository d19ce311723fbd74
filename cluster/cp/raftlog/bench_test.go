package raftlog

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// nopFSM applies nothing: the benchmark measures the log.
type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnap{}, nil }
func (nopFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnap struct{}

func (nopSnap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnap) Release()                          {}

// singleNode starts a one-voter raft on the store kind in a temporary
// directory and waits for it to lead.
func singleNode(b *testing.B, kind string) *raft.Raft {
	b.Helper()
	dir := b.TempDir()
	s, err := openStoreSized(kind, dir, 0) // both with their default segments
	if err != nil {
		b.Fatal(err)
	}
	stable := s.(raft.StableStore)
	logs, err := raft.NewLogCache(512, s)
	if err != nil {
		b.Fatal(err)
	}
	addr, trans := raft.NewInmemTransport("")
	c := raft.DefaultConfig()
	c.LocalID = "n1"
	c.LogLevel = "error"
	r, err := raft.NewRaft(c, nopFSM{}, logs, stable, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Shutdown().Error(); s.Close() })
	conf := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}
	if err := r.BootstrapCluster(conf).Error(); err != nil {
		b.Fatal(err)
	}
	select {
	case <-r.LeaderCh():
	case <-time.After(30 * time.Second):
		b.Fatal("no leadership")
	}
	return r
}

// BenchmarkApply measures raft.Apply on a one-voter group whose log is
// raftlog, against raft-wal v0.4.0 in the same run: one writer at a time
// (every Apply waits for its own fsync) and 16 at once (raft batches
// them into one append). The figure is applies/s; -benchtime sets how
// many.
func BenchmarkApply(b *testing.B) {
	value := make([]byte, 128)
	for _, writers := range []int{1, 16} {
		for _, kind := range []string{"raft-wal", "raftlog"} {
			b.Run(fmt.Sprintf("writers=%d/%s", writers, kind), func(b *testing.B) {
				r := singleNode(b, kind)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				var mu sync.Mutex
				var failed error
				per := (b.N + writers - 1) / writers
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							if err := r.Apply(value, 10*time.Second).Error(); err != nil {
								mu.Lock()
								failed = err
								mu.Unlock()
								return
							}
						}
					}()
				}
				wg.Wait()
				if failed != nil {
					b.Fatal(failed)
				}
				b.ReportMetric(float64(per*writers)/time.Since(start).Seconds(), "applies/s")
			})
		}
	}
}
