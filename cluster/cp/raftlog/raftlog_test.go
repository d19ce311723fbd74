package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func entry(i, term uint64) *raft.Log {
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d of term %d", i, term)),
		AppendedAt: time.Unix(0, int64(i)*1000)}
}

func entries(lo, hi, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := lo; i <= hi; i++ {
		out = append(out, entry(i, term))
	}
	return out
}

func mustOpen(t *testing.T, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustStore(t *testing.T, l *Log, es []*raft.Log) {
	t.Helper()
	for len(es) > 0 { // in batches of up to 7, as raft does
		n := min(7, len(es))
		if err := l.StoreLogs(es[:n]); err != nil {
			t.Fatalf("StoreLogs [%d..]: %v", es[0].Index, err)
		}
		es = es[n:]
	}
}

// checkLog asserts the log holds exactly [first, last], with the terms
// given by term(i).
func checkLog(t *testing.T, l *Log, first, last uint64, term func(uint64) uint64) {
	t.Helper()
	f, _ := l.FirstIndex()
	la, _ := l.LastIndex()
	if f != first || la != last {
		t.Fatalf("log holds [%d, %d], want [%d, %d]", f, la, first, last)
	}
	for i := first; i <= last && last > 0; i++ {
		var got raft.Log
		if err := l.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		want := entry(i, term(i))
		if got.Index != i || got.Term != want.Term || !bytes.Equal(got.Data, want.Data) || !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("GetLog(%d) = index %d term %d %q, want term %d %q", i, got.Index, got.Term, got.Data, want.Term, want.Data)
		}
	}
	var e raft.Log
	for _, i := range []uint64{first - 1, last + 1} {
		if i == 0 {
			continue
		}
		if err := l.GetLog(i, &e); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) outside [%d, %d] = %v, want ErrLogNotFound", i, first, last, err)
		}
	}
}

func term1(uint64) uint64 { return 1 }

// reopen closes l and opens its directory again.
func reopen(t *testing.T, l *Log, opts Options) *Log {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return mustOpen(t, l.dir, opts)
}

func TestAppendReadReopen(t *testing.T) {
	for _, size := range []int64{64 << 20, 300} { // one segment; many
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			opts := Options{SegmentSize: size}
			l := mustOpen(t, t.TempDir(), opts)
			checkLog(t, l, 0, 0, term1)
			mustStore(t, l, entries(1, 100, 1))
			checkLog(t, l, 1, 100, term1)
			l = reopen(t, l, opts)
			checkLog(t, l, 1, 100, term1)
			mustStore(t, l, entries(101, 120, 1))
			checkLog(t, l, 1, 120, term1)
			if size == 300 && len(l.segs) < 10 {
				t.Fatalf("%d segments of %d bytes, want many", len(l.segs), size)
			}
		})
	}
}

func TestStoreLogsRefusesOverlapAndAcceptsGap(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{})
	mustStore(t, l, entries(5, 10, 1)) // an empty log starts anywhere
	checkLog(t, l, 5, 10, term1)
	for _, bad := range [][]*raft.Log{entries(10, 11, 1), entries(3, 3, 1), {entry(11, 1), entry(13, 1)}} {
		if err := l.StoreLogs(bad); !errors.Is(err, ErrOutOfOrder) {
			t.Fatalf("StoreLogs from %d = %v, want ErrOutOfOrder", bad[0].Index, err)
		}
	}
	checkLog(t, l, 5, 10, term1)
	// A gap (raft's own writes after a snapshot) restarts the log there.
	mustStore(t, l, entries(50, 52, 2))
	checkLog(t, l, 50, 52, func(uint64) uint64 { return 2 })
	l = reopen(t, l, Options{})
	checkLog(t, l, 50, 52, func(uint64) uint64 { return 2 })
}

func TestDeleteRange(t *testing.T) {
	type step struct {
		lo, hi uint64
		// after: the log's bounds; a suffix deletion is followed by
		// appends of term 2 up to refill, checked too.
		first, last, refill uint64
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"prefix inside a segment", []step{{1, 3, 4, 100, 0}}},
		{"prefix across segments", []step{{1, 57, 58, 100, 0}}},
		{"prefix past the end empties", []step{{1, 200, 0, 0, 0}}},
		{"suffix inside the last segment", []step{{99, 100, 1, 98, 110}}},
		{"suffix across segments", []step{{40, 100, 1, 39, 60}}},
		{"suffix from a segment's first entry", []step{{0, 0, 0, 0, 0}}}, // filled below
		{"suffix then prefix", []step{{60, 100, 1, 59, 80}, {1, 70, 71, 80, 0}}},
		{"prefix then suffix of everything", []step{{1, 50, 51, 100, 0}, {51, 100, 0, 0, 0}}},
		{"no-op outside", []step{{200, 300, 1, 100, 0}, {0, 0, 1, 100, 0}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := Options{SegmentSize: 400}
			l := mustOpen(t, t.TempDir(), opts)
			mustStore(t, l, entries(1, 100, 1))
			steps := c.steps
			if c.name == "suffix from a segment's first entry" {
				b := l.segs[3].base
				steps = []step{{b, 100, 1, b - 1, 120}}
			}
			term := term1
			for _, s := range steps {
				if err := l.DeleteRange(s.lo, s.hi); err != nil {
					t.Fatalf("DeleteRange(%d, %d): %v", s.lo, s.hi, err)
				}
				checkLog(t, l, s.first, s.last, term)
				l = reopen(t, l, opts)
				checkLog(t, l, s.first, s.last, term)
				if s.refill > 0 {
					cut := s.last
					mustStore(t, l, entries(cut+1, s.refill, 2))
					term = func(i uint64) uint64 {
						if i > cut {
							return 2
						}
						return 1
					}
					checkLog(t, l, s.first, s.refill, term)
					l = reopen(t, l, opts)
					checkLog(t, l, s.first, s.refill, term)
				}
			}
		})
	}
}

func TestDeleteRangeRefusesTheMiddle(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{})
	mustStore(t, l, entries(1, 10, 1))
	if err := l.DeleteRange(3, 5); !errors.Is(err, ErrMiddle) {
		t.Fatalf("DeleteRange(3, 5) = %v, want ErrMiddle", err)
	}
	checkLog(t, l, 1, 10, term1)
}

func TestStable(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{})
	if v, err := l.GetUint64([]byte("CurrentTerm")); v != 0 || err != nil {
		t.Fatalf("unset GetUint64 = %d, %v", v, err)
	}
	if v, err := l.Get([]byte("LastVoteCand")); len(v) != 0 || err != nil {
		t.Fatalf("unset Get = %q, %v", v, err)
	}
	must(t, l.SetUint64([]byte("CurrentTerm"), 7))
	must(t, l.Set([]byte("LastVoteCand"), []byte("node-b")))
	must(t, l.SetUint64([]byte("CurrentTerm"), 8))
	l = reopen(t, l, Options{})
	if v, err := l.GetUint64([]byte("CurrentTerm")); v != 8 || err != nil {
		t.Fatalf("GetUint64 after reopen = %d, %v", v, err)
	}
	if v, _ := l.Get([]byte("LastVoteCand")); string(v) != "node-b" {
		t.Fatalf("Get after reopen = %q", v)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestClosed(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{})
	must(t, l.Close())
	must(t, l.Close())
	var e raft.Log
	for name, err := range map[string]error{
		"StoreLog": l.StoreLog(entry(1, 1)), "DeleteRange": l.DeleteRange(1, 1), "GetLog": l.GetLog(1, &e),
		"Set": l.Set([]byte("k"), nil),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// lastSegment is the path of the newest segment file in dir.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if len(m) == 0 {
		t.Fatal("no segment")
	}
	return m[len(m)-1]
}

// writeAtEnd writes b right after the records of the last segment in
// dir, over its preallocated zeros, as a write the process died in would.
func writeAtEnd(t *testing.T, dir string, b []byte) { t.Helper(); writeAfterEnd(t, dir, 0, b) }

// writeAfterEnd writes b skip bytes after the records of the last segment.
func writeAfterEnd(t *testing.T, dir string, skip int64, b []byte) {
	t.Helper()
	l := mustOpen(t, dir, Options{})
	end := l.segs[len(l.segs)-1].size
	must(t, l.Close())
	f, err := os.OpenFile(lastSegment(t, dir), os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(b, end+skip)
	must(t, err)
	must(t, f.Close())
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.Write(b)
	must(t, err)
	must(t, f.Close())
}

// TestTornTailRepaired: what a process killed in the middle of a write
// may leave at the end of the last segment is cut off at Open, and the
// acknowledged entries before it are all there.
func TestTornTailRepaired(t *testing.T) {
	rec := appendRecord(nil, entry(11, 1))
	flipped := bytes.Clone(rec)
	flipped[len(flipped)-1] ^= 0xff
	cases := map[string][]byte{
		"half a header":         rec[:5],
		"half a record":         rec[:len(rec)-3],
		"a bad checksum at end": flipped,
		"zeros":                 make([]byte, 4096),
		"a header then zeros":   append(bytes.Clone(rec[:recHeaderSize]), make([]byte, 100)...),
	}
	for name, tail := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l := mustOpen(t, dir, Options{})
			mustStore(t, l, entries(1, 10, 1))
			must(t, l.Close())
			writeAtEnd(t, dir, tail)
			l = mustOpen(t, dir, Options{})
			checkLog(t, l, 1, 10, term1)
			mustStore(t, l, entries(11, 12, 1))
			l = reopen(t, l, Options{})
			checkLog(t, l, 1, 12, term1)
		})
	}
}

// TestDamageRefused: damage a crash cannot explain is refused with
// ErrCorrupt naming the file, never "repaired" by dropping entries.
func TestDamageRefused(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string){
		"a flipped byte mid-segment": func(t *testing.T, dir string) {
			p := lastSegment(t, dir)
			b, _ := os.ReadFile(p)
			b[segHeaderSize+recHeaderSize+20] ^= 1
			must(t, os.WriteFile(p, b, 0o644))
		},
		"garbage after the records": func(t *testing.T, dir string) {
			writeAtEnd(t, dir, bytes.Repeat([]byte{0xAB}, 100))
		},
		"data after zeros": func(t *testing.T, dir string) {
			writeAfterEnd(t, dir, 100, []byte{1})
		},
		"a missing segment": func(t *testing.T, dir string) {
			m, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
			must(t, os.Remove(m[1]))
		},
		"a torn record in an earlier segment": func(t *testing.T, dir string) {
			m, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
			fi, _ := os.Stat(m[0])
			must(t, os.Truncate(m[0], fi.Size()-3))
		},
		"a damaged stable store": func(t *testing.T, dir string) {
			appendBytes(t, filepath.Join(dir, stableFile), []byte{1})
		},
		"a damaged first index": func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, metaFile), []byte("nonsense"), 0o644))
		},
		"a foreign file named as a segment": func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, segName(1000)), []byte("not a segment at all, no"), 0o644))
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l := mustOpen(t, dir, Options{SegmentSize: 500})
			mustStore(t, l, entries(1, 40, 1))
			must(t, l.SetUint64([]byte("CurrentTerm"), 1))
			must(t, l.Close())
			damage(t, dir)
			l, err := Open(dir, Options{SegmentSize: 500})
			if err == nil {
				l.Close()
				t.Fatal("Open of a damaged log succeeded")
			}
			if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(dir)) {
				t.Fatalf("Open = %v, want ErrCorrupt naming a file in %s", err, dir)
			}
		})
	}
}

// TestInterruptedChangesReopen lays out on disk what a crash part-way
// through each multi-step change leaves, and checks that Open makes a
// valid log of it.
func TestInterruptedChangesReopen(t *testing.T) {
	opts := Options{SegmentSize: 400}
	t.Run("compaction recorded, segments not yet deleted", func(t *testing.T) {
		dir := t.TempDir()
		l := mustOpen(t, dir, opts)
		mustStore(t, l, entries(1, 100, 1))
		must(t, l.Close())
		must(t, writeFirst(dir, 60))
		l = mustOpen(t, dir, opts)
		checkLog(t, l, 60, 100, term1)
		if l.segs[0].base > 60 || l.segs[0].last() < 60 {
			t.Fatalf("first segment [%d, %d] should hold 60: the ones below were to be deleted", l.segs[0].base, l.segs[0].last())
		}
	})
	t.Run("emptied: first index recorded past the end, segments left", func(t *testing.T) {
		dir := t.TempDir()
		l := mustOpen(t, dir, opts)
		mustStore(t, l, entries(1, 100, 1))
		must(t, l.Close())
		must(t, writeFirst(dir, 101))
		l = mustOpen(t, dir, opts)
		checkLog(t, l, 0, 0, term1)
		mustStore(t, l, entries(500, 505, 1))
		checkLog(t, l, 500, 505, term1)
	})
	t.Run("a temporary file left by a rename", func(t *testing.T) {
		dir := t.TempDir()
		l := mustOpen(t, dir, opts)
		mustStore(t, l, entries(1, 10, 1))
		must(t, l.Close())
		must(t, os.WriteFile(filepath.Join(dir, segName(11)+".tmp"), []byte("half"), 0o644))
		l = mustOpen(t, dir, opts)
		checkLog(t, l, 1, 10, term1)
		mustStore(t, l, entries(11, 30, 1))
		checkLog(t, l, 1, 30, term1)
	})
	t.Run("suffix: later segments deleted, the cut not yet made", func(t *testing.T) {
		// The state is the log before the deletion minus whole later
		// segments: a shorter log of old entries, which raft truncates
		// again when the leader's entries conflict.
		dir := t.TempDir()
		l := mustOpen(t, dir, opts)
		mustStore(t, l, entries(1, 100, 1))
		keep := l.segs[2].last()
		must(t, l.Close())
		m, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
		for _, p := range m[3:] {
			must(t, os.Remove(p))
		}
		l = mustOpen(t, dir, opts)
		checkLog(t, l, 1, keep, term1)
	})
}

// FuzzScanSegment feeds arbitrary bytes after a segment header to the
// scan that Open runs: it must never panic, and what it accepts must
// read back as consecutive, intact records.
func FuzzScanSegment(f *testing.F) {
	two := appendRecord(appendRecord(nil, entry(1, 1)), entry(2, 1))
	f.Add(two)
	f.Add(two[:len(two)-5])
	f.Add(append(bytes.Clone(two), make([]byte, 64)...))
	f.Add(append(append(bytes.Clone(two), make([]byte, 64)...), 1))
	f.Add(appendRecord(nil, entry(1, 1))[:9])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		data := make([]byte, segHeaderSize, segHeaderSize+len(body))
		data = append(data, body...)
		s := &segment{base: 1, path: "fuzz", size: segHeaderSize}
		res, err := s.scan(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("scan: %v, want nil or ErrCorrupt", err)
			}
			return
		}
		if res.tornAt >= 0 && res.tornAt != s.size {
			t.Fatalf("torn at %d but the records end at %d", res.tornAt, s.size)
		}
		for k, off := range s.offs {
			end := s.size
			if k+1 < len(s.offs) {
				end = s.offs[k+1]
			}
			rec := data[off:end]
			var e raft.Log
			if crc32.Checksum(rec[recHeaderSize:], castagnoli) != binary.LittleEndian.Uint32(rec[4:]) {
				t.Fatalf("record %d accepted with a bad checksum", k)
			}
			if err := decodePayload(rec[recHeaderSize:], &e); err != nil || e.Index != uint64(k)+1 {
				t.Fatalf("record %d accepted but reads as index %d: %v", k, e.Index, err)
			}
		}
	})
}

// TestReadsDuringWrites: readers go on while entries are appended across
// many segments, the prefix compacted and the suffix cut (run with -race).
func TestReadsDuringWrites(t *testing.T) {
	l := mustOpen(t, t.TempDir(), Options{SegmentSize: 512})
	mustStore(t, l, entries(1, 10, 1))
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				first, _ := l.FirstIndex()
				last, _ := l.LastIndex()
				for i := first; i <= last && last > 0; i++ {
					var e raft.Log
					err := l.GetLog(i, &e)
					if err != nil && !errors.Is(err, raft.ErrLogNotFound) { // compacted or cut meanwhile
						errs <- fmt.Errorf("GetLog(%d): %w", i, err)
						return
					}
					if err == nil && e.Index != i {
						errs <- fmt.Errorf("GetLog(%d) read index %d", i, e.Index)
						return
					}
				}
			}
		}()
	}
	next := uint64(11)
	for round := range 40 {
		mustStore(t, l, entries(next, next+19, uint64(round+1)))
		next += 20
		if round%5 == 4 {
			must(t, l.DeleteRange(next-5, next-1))
			next -= 5
			first, _ := l.FirstIndex()
			must(t, l.DeleteRange(first, first+30))
		}
	}
	close(stop)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
