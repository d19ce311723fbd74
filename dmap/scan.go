package dmap

import (
	"cmp"
	"context"
	"slices"
)

// SCAN: a cursor names a partition and a position in it. Positions are a
// hash of the key (scanPos), the same on every node, and a partition's
// keys are visited in order of position, so a cursor means the same thing
// whichever node owns the partition when it is used: a key present from
// the start to the end of a scan is returned at least once, whatever
// moved in between. Keys with the same position are returned together.

// ScanOptions filter a scan.
type ScanOptions struct {
	Count int    // keys to examine (default 10)
	Match string // glob pattern ("" for every key)
	Type  string // "string", "hash" ("" for any)
}

// Scan returns keys from cursor on (0 to start) and the cursor to go on
// with (0 when the scan is complete). Like Redis's, it may return fewer
// keys than Count, or none, before the end.
func (d *DMap) Scan(ctx context.Context, cursor uint64, opt ScanOptions) ([]string, uint64, error) {
	if opt.Count <= 0 {
		opt.Count = 10
	}
	p, after := int(cursor>>posBits), cursor&(1<<posBits-1)
	var keys []string
	examined := 0
	for p < d.cfg.Partitions && examined < opt.Count {
		o := Op{Code: CodeScan, N: int64(after), M: int64(opt.Count - examined), Args: [][]byte{[]byte(opt.Match), []byte(opt.Type)}}
		res, err := d.DoAt(ctx, p, []Op{o})
		if err != nil {
			return nil, 0, err
		}
		r := res[0]
		for i, v := range r.Values {
			if i == 0 {
				examined += int(r.Int >> 32) // scan reports examined in the high bits
				continue
			}
			keys = append(keys, string(v))
		}
		if next := r.Int & (1<<32 - 1); next == 0 {
			p, after = p+1, 0
		} else {
			after = uint64(r.Value[0])<<48 | uint64(r.Value[1])<<40 | uint64(r.Value[2])<<32 | uint64(r.Value[3])<<24 | uint64(r.Value[4])<<16 | uint64(r.Value[5])<<8 | uint64(r.Value[6])
		}
	}
	if p >= d.cfg.Partitions {
		return keys, 0, nil
	}
	return keys, uint64(p)<<posBits | after, nil
}

type scanItem struct {
	key string
	pos uint64
	e   *entry
}

// scan runs a CodeScan at the owner (pt locked): o.N the position to start
// at, o.M how many keys to examine, Args the match pattern and type. The
// reply: Values[0] a marker, then the matching keys; Int's high 32 bits
// the keys examined, low bits 1 if the partition has more; Value the next
// position (7 bytes, big-endian).
func (d *DMap) scan(pt *part, o *Op, now int64, r *Result) {
	after := uint64(o.N)
	var items []scanItem
	for k, e := range pt.keys {
		if e.pos >= after && (e.expire == 0 || e.expire > now) {
			items = append(items, scanItem{k, e.pos, e})
		}
	}
	slices.SortFunc(items, func(a, b scanItem) int { return cmp.Compare(a.pos, b.pos) })
	n := min(int(max(o.M, 1)), len(items))
	for n < len(items) && n > 0 && items[n].pos == items[n-1].pos {
		n++
	}
	match, typ := "", ""
	if len(o.Args) > 0 {
		match = string(o.Args[0])
	}
	if len(o.Args) > 1 {
		typ = string(o.Args[1])
	}
	r.Values = [][]byte{{}}
	for _, it := range items[:n] {
		if match != "" && !Match(match, it.key) {
			continue
		}
		if typ != "" && (typ == "hash") != it.e.isHash() || typ != "" && typ != "hash" && typ != "string" {
			continue
		}
		r.Values = append(r.Values, []byte(it.key))
	}
	r.Int = int64(n) << 32
	if n < len(items) {
		next := items[n-1].pos + 1
		r.Int |= 1
		r.Value = []byte{byte(next >> 48), byte(next >> 40), byte(next >> 32), byte(next >> 24), byte(next >> 16), byte(next >> 8), byte(next)}
	}
}
