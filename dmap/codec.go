package dmap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The owner protocol's messages are encoded by hand: they are on the path
// of every remote command. Integers are varints, byte strings a length and
// the bytes (a "nullable" one stores length+1, 0 for nil). Decoding never
// panics, bounds every count by the bytes left, and refuses trailing
// bytes; decoded byte slices alias the input (the rpc layer hands each
// handler a body of its own).

// ErrCodec is wrapped by every decoding error of the owner protocol.
var ErrCodec = errors.New("dmap: malformed owner message")

// maxBatches and maxOps bound what one request may carry.
const (
	maxBatches = 1 << 12
	maxOps     = 1 << 16
)

// request is a call to one owner: operations grouped by partition.
type request struct {
	Track   bool // register the caller as a holder of every key read
	Batches []batch
}

type batch struct {
	Partition int
	Ops       []Op
}

// batchStatus says whether an owner ran a batch.
type batchStatus uint8

const (
	statusOK          batchStatus = iota
	statusNotOwner                // not run: ask the owner of a newer table
	statusUnavailable             // not run: the owner may not answer yet (lease)
	statusFailed                  // run, but a backup or a holder was not told: not acknowledged
)

type reply struct {
	Batches []batchReply
}

type batchReply struct {
	Status  batchStatus
	Epoch   uint64
	Results []Result
}

// replication is a batch of an owner's changes to one partition, numbered.
type replication struct {
	Partition int
	Epoch     uint64
	// Full: the batch is the whole partition as of Seq (a backup's
	// baseline); the backup drops what it held.
	Full    bool
	Seq     uint64 // the last record's number (Full: the snapshot's)
	Records []record
}

// record is the state a change left a key in.
type record struct {
	Seq   uint64
	Key   string
	Flush bool   // the partition was emptied (Key unused)
	E     *entry // nil: the key is gone
}

// invalidation tells a holder that keys of a partition changed.
type invalidation struct {
	Partition int
	Seq       uint64 // per partition and owner, from 1
	All       bool   // every key of the partition (Keys unused)
	Keys      []string
}

type encoder struct{ b []byte }

func (e *encoder) uint(v uint64)  { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) int(v int64)    { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(v []byte) { e.uint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) str(v string)   { e.uint(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) bool(v bool)    { e.b = append(e.b, b2u(v)) }
func (e *encoder) nullable(v []byte) {
	if v == nil {
		e.uint(0)
		return
	}
	e.uint(uint64(len(v)) + 1)
	e.b = append(e.b, v...)
}

func b2u(v bool) byte {
	if v {
		return 1
	}
	return 0
}

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", ErrCodec, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uint(limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	if v > limit {
		d.fail("%d exceeds %d", v, limit)
		return 0
	}
	return v
}

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("needs %d bytes, %d left", n, len(d.b)-d.off)
		return nil
	}
	s := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return s
}

func (d *decoder) bytes() []byte { return d.take(d.uint(1 << 40)) }
func (d *decoder) str() string   { return string(d.bytes()) }

func (d *decoder) nullable() []byte {
	n := d.uint(1 << 40)
	if n == 0 || d.err != nil {
		return nil
	}
	return nonNil(d.take(n - 1))
}

func (d *decoder) bool() bool {
	switch v := d.uint(1); {
	case d.err != nil:
		return false
	default:
		return v == 1
	}
}

// count reads a count of elements that take at least one byte each.
func (d *decoder) count(limit int) int {
	n := d.uint(uint64(limit))
	if n > uint64(len(d.b)-d.off) {
		d.fail("count %d beyond the %d bytes left", n, len(d.b)-d.off)
		return 0
	}
	return int(n)
}

func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}

func (e *encoder) op(o *Op) {
	e.uint(uint64(o.Code))
	e.uint(uint64(o.Flags))
	e.int(o.N)
	e.int(o.M)
	e.str(o.Key)
	e.uint(uint64(len(o.Args)))
	for _, a := range o.Args {
		e.bytes(a)
	}
}

func (d *decoder) op(o *Op) {
	o.Code = Code(d.uint(uint64(codeMax - 1)))
	o.Flags = uint32(d.uint(1<<32 - 1))
	o.N, o.M = d.int(), d.int()
	o.Key = d.str()
	if n := d.count(maxOps); n > 0 {
		o.Args = make([][]byte, n)
		for i := range o.Args {
			o.Args[i] = d.bytes()
		}
	}
	if d.err == nil {
		if err := o.validate(); err != nil {
			d.fail("invalid operation %d: %v", o.Code, err)
		}
	}
}

func appendRequest(b []byte, r *request) []byte {
	e := encoder{b}
	e.bool(r.Track)
	e.uint(uint64(len(r.Batches)))
	for i := range r.Batches {
		bt := &r.Batches[i]
		e.uint(uint64(bt.Partition))
		e.uint(uint64(len(bt.Ops)))
		for j := range bt.Ops {
			e.op(&bt.Ops[j])
		}
	}
	return e.b
}

func decodeRequest(b []byte) (request, error) {
	d := decoder{b: b}
	var r request
	r.Track = d.bool()
	r.Batches = make([]batch, d.count(maxBatches))
	for i := range r.Batches {
		bt := &r.Batches[i]
		bt.Partition = int(d.uint(1 << 20))
		bt.Ops = make([]Op, d.count(maxOps))
		for j := range bt.Ops {
			d.op(&bt.Ops[j])
		}
	}
	return r, d.end()
}

func appendReply(b []byte, r *reply) []byte {
	e := encoder{b}
	e.uint(uint64(len(r.Batches)))
	for i := range r.Batches {
		br := &r.Batches[i]
		e.uint(uint64(br.Status))
		e.uint(br.Epoch)
		e.uint(uint64(len(br.Results)))
		for j := range br.Results {
			res := &br.Results[j]
			e.uint(errCode(res.Err))
			e.bool(res.Nil)
			e.int(res.Int)
			e.nullable(res.Value)
			if res.Values == nil {
				e.uint(0)
				continue
			}
			e.uint(uint64(len(res.Values)) + 1)
			for _, v := range res.Values {
				e.nullable(v)
			}
		}
	}
	return e.b
}

func decodeReply(b []byte) (reply, error) {
	d := decoder{b: b}
	var r reply
	r.Batches = make([]batchReply, d.count(maxBatches))
	for i := range r.Batches {
		br := &r.Batches[i]
		br.Status = batchStatus(d.uint(uint64(statusFailed)))
		br.Epoch = d.uint(1<<64 - 1)
		br.Results = make([]Result, d.count(maxOps))
		for j := range br.Results {
			res := &br.Results[j]
			res.Err = resultErrs[d.uint(uint64(len(resultErrs)-1))]
			res.Nil, res.Int = d.bool(), d.int()
			res.Value = d.nullable()
			n := d.uint(1 << 30)
			if n > 0 && n-1 > uint64(len(d.b)-d.off) {
				d.fail("%d values beyond the %d bytes left", n-1, len(d.b)-d.off)
			} else if n > 0 {
				res.Values = make([][]byte, n-1)
				for k := range res.Values {
					res.Values[k] = d.nullable()
				}
			}
		}
	}
	return r, d.end()
}

func (e *encoder) entry(en *entry) {
	if en == nil {
		e.uint(0)
		return
	}
	if en.hash == nil {
		e.uint(1)
		e.bytes(en.str)
	} else {
		e.uint(2)
		e.uint(uint64(len(en.hash)))
		for _, f := range en.hash {
			e.str(f.k)
			e.bytes(f.v)
		}
	}
	e.int(en.expire)
}

func (d *decoder) entry(key string) *entry {
	kind := d.uint(2)
	if kind == 0 || d.err != nil {
		return nil
	}
	en := &entry{pos: scanPos(key)}
	if kind == 1 {
		en.str = nonNil(d.bytes())
	} else {
		en.hash = make([]field, d.count(maxOps))
		for i := range en.hash {
			en.hash[i] = field{d.str(), nonNil(d.bytes())}
		}
	}
	en.expire = d.int()
	return en
}

func appendReplication(b []byte, r *replication) []byte {
	e := encoder{b}
	e.uint(uint64(r.Partition))
	e.uint(r.Epoch)
	e.bool(r.Full)
	e.uint(r.Seq)
	e.uint(uint64(len(r.Records)))
	for i := range r.Records {
		rec := &r.Records[i]
		e.uint(rec.Seq)
		e.bool(rec.Flush)
		e.str(rec.Key)
		e.entry(rec.E)
	}
	return e.b
}

func decodeReplication(b []byte) (replication, error) {
	d := decoder{b: b}
	var r replication
	r.Partition = int(d.uint(1 << 20))
	r.Epoch = d.uint(1<<64 - 1)
	r.Full = d.bool()
	r.Seq = d.uint(1<<64 - 1)
	r.Records = make([]record, d.count(1<<30))
	for i := range r.Records {
		rec := &r.Records[i]
		rec.Seq, rec.Flush = d.uint(1<<64-1), d.bool()
		rec.Key = d.str()
		rec.E = d.entry(rec.Key)
	}
	return r, d.end()
}

func appendInvalidation(b []byte, v *invalidation) []byte {
	e := encoder{b}
	e.uint(uint64(v.Partition))
	e.uint(v.Seq)
	e.bool(v.All)
	e.uint(uint64(len(v.Keys)))
	for _, k := range v.Keys {
		e.str(k)
	}
	return e.b
}

func decodeInvalidation(b []byte) (invalidation, error) {
	d := decoder{b: b}
	var v invalidation
	v.Partition = int(d.uint(1 << 20))
	v.Seq, v.All = d.uint(1<<64-1), d.bool()
	if n := d.count(1 << 30); n > 0 {
		v.Keys = make([]string, n)
		for i := range v.Keys {
			v.Keys[i] = d.str()
		}
	}
	return v, d.end()
}

// appendRepls encodes a message of encoded replications (rpcRepls).
func appendRepls(b []byte, bodies [][]byte) []byte {
	e := encoder{b}
	e.uint(uint64(len(bodies)))
	for _, body := range bodies {
		e.bytes(body)
	}
	return e.b
}

// decodeRepls decodes rpcRepls's message into its replications' bodies
// (aliasing b), each for decodeReplication.
func decodeRepls(b []byte) ([][]byte, error) {
	d := decoder{b: b}
	out := make([][]byte, d.count(maxBatches))
	for i := range out {
		out[i] = d.bytes()
	}
	return out, d.end()
}

// appendReplsReply encodes the backup's answer to rpcRepls: per
// replication, "" when applied, else why not.
func appendReplsReply(b []byte, msgs []string) []byte {
	e := encoder{b}
	e.uint(uint64(len(msgs)))
	for _, m := range msgs {
		e.str(m)
	}
	return e.b
}

// decodeReplsReply decodes it, refusing an answer for other than n
// replications.
func decodeReplsReply(b []byte, n int) ([]string, error) {
	d := decoder{b: b}
	out := make([]string, d.count(maxBatches))
	for i := range out {
		out[i] = d.str()
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if len(out) != n {
		return nil, fmt.Errorf("%w: %d replications answered, %d sent", ErrCodec, len(out), n)
	}
	return out, nil
}
