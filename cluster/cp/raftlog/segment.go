package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
)

// A segment file is a header followed by records, one per log entry, with
// consecutive indexes starting at the base index in the header (and in
// the file's name):
//
//	header:  "SHOALLOG" | version u32 | reserved u32 | base index u64   (24 bytes)
//	record:  payload length u32 | CRC-32C of the payload u32 | payload
//	payload: index u64 | term u64 | type u8 | appended-at unix ns i64 |
//	         data length u32 | data | extensions (the rest)
//
// Integers are little-endian. A segment is created complete with its
// header (written to a temporary name, synced, then renamed), so a
// segment file always has a whole header. The segment being appended to
// is preallocated with zeros (see preallocate): its records end at the
// first record header that is all zeros, and nothing but zeros may
// follow. A segment is trimmed to its records when the next one starts.
const (
	segMagic      = "SHOALLOG"
	segVersion    = 1
	segHeaderSize = 24
	recHeaderSize = 8
	payloadFixed  = 8 + 8 + 1 + 8 + 4
	// maxPayload bounds a record read back, so that a damaged length
	// cannot make the reader allocate gigabytes.
	maxPayload = 1 << 30
	segSuffix  = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segment is one segment file and the offsets of its records.
type segment struct {
	base uint64
	path string
	f    *os.File
	offs []int64 // offs[i] is the offset of the record of index base+i
	size int64   // the end of the last record: where the next one goes
}

// last is the index of the segment's last record; base-1 when empty.
func (s *segment) last() uint64 { return s.base + uint64(len(s.offs)) - 1 }

func segName(base uint64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

// createSegment creates an empty segment starting at base, durably, and
// preallocates it to size.
func createSegment(dir string, base uint64, size int64) (*segment, error) {
	path := filepath.Join(dir, segName(base))
	hdr := make([]byte, segHeaderSize)
	copy(hdr, segMagic)
	binary.LittleEndian.PutUint32(hdr[8:], segVersion)
	binary.LittleEndian.PutUint64(hdr[16:], base)
	if err := writeFileAtomic(path, hdr); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	preallocate(f, size)
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return &segment{base: base, path: path, f: f, size: segHeaderSize}, nil
}

// appendRecord encodes l as a record at the end of buf.
func appendRecord(buf []byte, l *raft.Log) []byte {
	n := payloadFixed + len(l.Data) + len(l.Extensions)
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	buf = binary.LittleEndian.AppendUint32(buf, 0) // the CRC, below
	buf = binary.LittleEndian.AppendUint64(buf, l.Index)
	buf = binary.LittleEndian.AppendUint64(buf, l.Term)
	buf = append(buf, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	buf = binary.LittleEndian.AppendUint64(buf, uint64(at))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(l.Data)))
	buf = append(buf, l.Data...)
	buf = append(buf, l.Extensions...)
	payload := buf[start+recHeaderSize:]
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, castagnoli))
	return buf
}

// decodePayload fills l from a record's payload; the slices it sets are
// fresh copies owned by l.
func decodePayload(p []byte, l *raft.Log) error {
	if len(p) < payloadFixed {
		return errors.New("record shorter than its fixed fields")
	}
	dataLen := int(binary.LittleEndian.Uint32(p[25:]))
	if dataLen > len(p)-payloadFixed {
		return errors.New("record data length exceeds the record")
	}
	l.Index = binary.LittleEndian.Uint64(p)
	l.Term = binary.LittleEndian.Uint64(p[8:])
	l.Type = raft.LogType(p[16])
	l.AppendedAt = time.Time{}
	if at := int64(binary.LittleEndian.Uint64(p[17:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	rest := p[payloadFixed:]
	l.Data = bytes.Clone(rest[:dataLen])
	l.Extensions = nil
	if len(rest) > dataLen {
		l.Extensions = bytes.Clone(rest[dataLen:])
	}
	return nil
}

// readRecord reads and checks the record of index at off, whose record
// (header and payload) is n bytes long.
func (s *segment) readRecord(index uint64, off, n int64, l *raft.Log) error {
	buf := make([]byte, n)
	if _, err := s.f.ReadAt(buf, off); err != nil {
		return fmt.Errorf("raftlog: reading index %d from %s: %w", index, s.path, err)
	}
	payload := buf[recHeaderSize:]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(buf[4:]) {
		return fmt.Errorf("%w: %s: the record of index %d at offset %d fails its checksum", ErrCorrupt, s.path, index, off)
	}
	if err := decodePayload(payload, l); err != nil {
		return fmt.Errorf("%w: %s: index %d: %v", ErrCorrupt, s.path, index, err)
	}
	if l.Index != index {
		return fmt.Errorf("%w: %s: offset %d holds index %d, not %d", ErrCorrupt, s.path, off, l.Index, index)
	}
	return nil
}

// scanResult is what scanning a segment found after its valid records.
type scanResult struct {
	// tornAt is the offset of an unfinished last record (-1: none): a
	// write the process died in, never synced, so never acknowledged.
	tornAt int64
	why    string
}

// openSegment opens and scans a segment file, indexing its records. A
// record that fails its checks is an error (ErrCorrupt) unless it is
// unfinished and nothing but zeros follows it; then the scan stops there
// and reports it, and the caller decides (only the last segment may end
// so).
func openSegment(path string, base uint64) (*segment, scanResult, error) {
	res := scanResult{tornAt: -1}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, res, err
	}
	s := &segment{base: base, path: path, f: f, size: segHeaderSize}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, res, err
	}
	if err := s.checkHeader(fi.Size()); err != nil {
		f.Close()
		return nil, res, err
	}
	res, err = s.scan(io.NewSectionReader(f, 0, fi.Size()), fi.Size())
	if err != nil {
		f.Close()
		return nil, res, err
	}
	return s, res, nil
}

func (s *segment) checkHeader(size int64) error {
	hdr := make([]byte, segHeaderSize)
	if size < segHeaderSize {
		return fmt.Errorf("%w: %s: %d bytes, shorter than a segment header", ErrCorrupt, s.path, size)
	}
	if _, err := s.f.ReadAt(hdr, 0); err != nil {
		return err
	}
	switch {
	case string(hdr[:8]) != segMagic:
		return fmt.Errorf("%w: %s is not a shoal raft log segment", ErrCorrupt, s.path)
	case binary.LittleEndian.Uint32(hdr[8:]) != segVersion:
		return fmt.Errorf("%w: %s: unknown segment version %d", ErrCorrupt, s.path, binary.LittleEndian.Uint32(hdr[8:]))
	case binary.LittleEndian.Uint64(hdr[16:]) != s.base:
		return fmt.Errorf("%w: %s: its header says base index %d", ErrCorrupt, s.path, binary.LittleEndian.Uint64(hdr[16:]))
	}
	return nil
}

// scan reads the records after the header, appending their offsets.
func (s *segment) scan(r io.ReaderAt, size int64) (scanResult, error) {
	res := scanResult{tornAt: -1}
	var hdr [recHeaderSize]byte
	var payload []byte
	off := int64(segHeaderSize)
	for off < size {
		bad := func(why string) (scanResult, error) {
			if torn, err := tornTail(r, off, size); err != nil || !torn {
				return res, fmt.Errorf("%w: %s at offset %d (index %d): %s, and data follows it", ErrCorrupt, s.path, off, s.base+uint64(len(s.offs)), why)
			}
			res.tornAt, res.why = off, why
			return res, nil
		}
		if size-off < recHeaderSize {
			return bad("an incomplete record header")
		}
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return res, err
		}
		n := int64(binary.LittleEndian.Uint32(hdr[:]))
		if n == 0 && binary.LittleEndian.Uint32(hdr[4:]) == 0 {
			// The end of the records, if only preallocated zeros follow.
			if zero, err := allZero(r, off, size); err != nil || zero {
				return res, err
			}
		}
		if n < payloadFixed || n > maxPayload {
			return bad(fmt.Sprintf("an impossible record length %d", n))
		}
		end := off + recHeaderSize + n
		if end > size {
			return bad("a record cut short by the end of the file")
		}
		payload = growTo(payload, int(n))
		if _, err := r.ReadAt(payload, off+recHeaderSize); err != nil {
			return res, err
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			if end == size {
				res.tornAt, res.why = off, "the last record fails its checksum"
				return res, nil
			}
			return bad("a record that fails its checksum")
		}
		want := s.base + uint64(len(s.offs))
		if got := binary.LittleEndian.Uint64(payload); got != want {
			return res, fmt.Errorf("%w: %s at offset %d: index %d where %d belongs", ErrCorrupt, s.path, off, got, want)
		}
		s.offs = append(s.offs, off)
		off = end
		s.size = end
	}
	return res, nil
}

// tornTail reports whether the bytes from off to the end of the file may
// be a write the process died in: a record cut short by the end of the
// file, or a bad record followed by nothing but zeros (a file extended
// but not written to the end). A bad record with data after it is not:
// something else damaged the file.
func tornTail(r io.ReaderAt, off, size int64) (bool, error) {
	if size-off < recHeaderSize {
		return true, nil
	}
	var hdr [recHeaderSize]byte
	if _, err := r.ReadAt(hdr[:], off); err != nil {
		return false, err
	}
	end := off + recHeaderSize
	if n := int64(binary.LittleEndian.Uint32(hdr[:])); n >= payloadFixed && n <= maxPayload {
		end += n
	}
	if end >= size {
		return true, nil
	}
	return allZero(r, end, size)
}

func allZero(r io.ReaderAt, off, size int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off < size {
		n := min(int64(len(buf)), size-off)
		if _, err := r.ReadAt(buf[:n], off); err != nil {
			return false, err
		}
		for _, b := range buf[:n] {
			if b != 0 {
				return false, nil
			}
		}
		off += n
	}
	return true, nil
}

func growTo(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
