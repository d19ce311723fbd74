package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
)

// writeFileAtomic replaces path with data durably: a temporary file is
// written and synced, renamed over path, and the directory synced. A
// crash leaves either the old file or the new one, never a mix.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes the creations, renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// sealed frames a small file's body: magic | body | CRC-32C of both.
func sealed(magic string, body []byte) []byte {
	b := append([]byte(magic), body...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// unseal checks and strips what sealed added. A missing file reads as
// (nil, nil).
func unseal(path, magic string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b) < len(magic)+4 || string(b[:len(magic)]) != magic ||
		crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: %s is damaged (bad magic or checksum)", ErrCorrupt, path)
	}
	return b[len(magic) : len(b)-4], nil
}

const (
	metaFile    = "first-index"
	metaMagic   = "SHOALFIRST1"
	stableFile  = "stable"
	stableMagic = "SHOALSTABLE1"
)

// readFirst reads the persisted first index (0 if never written).
func readFirst(dir string) (uint64, error) {
	path := filepath.Join(dir, metaFile)
	b, err := unseal(path, metaMagic)
	if err != nil || b == nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: %s has %d bytes of body, want 8", ErrCorrupt, path, len(b))
	}
	return binary.LittleEndian.Uint64(b), nil
}

func writeFirst(dir string, first uint64) error {
	return writeFileAtomic(filepath.Join(dir, metaFile), sealed(metaMagic, binary.LittleEndian.AppendUint64(nil, first)))
}

// encodeStable encodes the stable store's keys, sorted, as
// count u32 | (key length u32 | key | value length u32 | value)...
func encodeStable(m map[string][]byte) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(keys)))
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(m[k])))
		b = append(b, m[k]...)
	}
	return b
}

func decodeStable(path string, b []byte) (map[string][]byte, error) {
	m := map[string][]byte{}
	if b == nil {
		return m, nil
	}
	bad := fmt.Errorf("%w: %s: malformed stable store", ErrCorrupt, path)
	next := func() ([]byte, bool) {
		if len(b) < 4 {
			return nil, false
		}
		n := binary.LittleEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(n) {
			return nil, false
		}
		v := b[4 : 4+n]
		b = b[4+n:]
		return v, true
	}
	if len(b) < 4 {
		return nil, bad
	}
	count := binary.LittleEndian.Uint32(b)
	b = b[4:]
	for range count {
		k, ok1 := next()
		v, ok2 := next()
		if !ok1 || !ok2 {
			return nil, bad
		}
		m[string(k)] = append([]byte(nil), v...)
	}
	if len(b) != 0 {
		return nil, bad
	}
	return m, nil
}

func leUint64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func fromLE(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
