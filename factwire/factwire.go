// Package factwire is the wire format of analyzer.Fact batches between
// lagscope's two stages: `serve --role=ingest` resolves spans into facts
// and publishes them, one batch per Kafka message; `serve --role=join`
// decodes the batches and applies them to its Joiner.
//
// # Format, version 3
//
// A batch is, in order (uvarint and varint as encoding/binary writes them;
// varint values are zig-zag signed):
//
//	byte     version (3)
//	8 bytes  producer: the publishing instance's random id, big endian
//	uvarint  seq: the batch's sequence number at that producer
//	uvarint  number of strings in the dictionary, then each string as
//	         uvarint length + bytes; index 0 is implicitly "" and not sent
//	uvarint  number of facts, then each fact:
//	  byte     kind (1 append, 2 project, 3 query; version 3 only: 4
//	           resolved, 5 project_span, 6 learned; see Kinds)
//	  byte     flags:
//	             0x01 EventID is empty
//	             0x02 EventID is the lowercase canonical UUID text of Event
//	             0x04 Event is analyzer.KeyOf(EventID) and is not sent
//	             0x08 TraceID is that of the previous fact and is not sent
//	             0x10 CommandStart is 0 and is not sent
//	             0x20 Weight is sent (version 2 only; without it Weight is 0)
//	  16 bytes Event, unless flag 0x04
//	  string   EventID as uvarint length + bytes, unless flag 0x01 or 0x02
//	  uvarint  dictionary index of EventType, AggregateType, AggregateID,
//	           Command, Projection, Query and Service, in that order
//	  varint   Version
//	  varint   Start - CommandStart, unless flag 0x10
//	  16 bytes TraceID, unless flag 0x08
//	  8 bytes  SpanID
//	  varint   Start - the previous fact's Start (the first fact's: - 0)
//	  varint   End - Start
//	  8 bytes  Weight, IEEE 754 binary64 big endian, if flag 0x20: a
//	           sampled span's adjusted count, from 1 to 2^56
//	  uvarint  LinkedTraces
//
// Nothing may follow the last fact. The labels a batch repeats (types,
// commands, projections, aggregates) are sent once per batch, a UUID event
// id costs 16 bytes (its key), and timestamps are deltas: a fact of the
// synthetic CQRS stream takes about 50 bytes (see BenchmarkEncode).
//
// A new field of analyzer.Fact, a new kind, or any change to this layout,
// takes a new version byte; Decode refuses versions it does not know
// (ErrVersion), and a kind its version does not have (ErrMalformed): a
// reader never applies a fact it does not understand.
//
// # Kinds
//
// Kinds 4 to 6 (version 3) carry what the join role needs to join across
// instances what one process joins in memory (server/rekey.go).
// Kinds 5 and 6 use the layout above; fields not named here are zero.
//
//   - resolved (4): the projection fact of span TraceID, SpanID keyed by
//     producer span key Event (a project_span) was joined to the span's
//     events by a join instance that holds them; sent by it to the
//     partition of Event. It has a layout of its own, as it carries
//     nothing else: after kind and flags (0x11, with 0x08 or not), 16
//     bytes Event, 16 bytes TraceID unless flag 0x08, 8 bytes SpanID,
//     varint Start - the previous fact's Start, varint End - Start (both
//     0 as sent today): 28 to 44 bytes.
//   - project_span (5): a projection fact like kind 2, keyed by its
//     producer span (Event is analyzer.KeyOfSpan of it), that the ingest
//     instance could not resolve to the span's events (the span had not
//     reached it); sent to every partition, as the instance that holds the
//     span's appends (partitioned by event) is not known.
//   - learned (6): a join instance learned from traffic that projection
//     Projection shows events of type EventType, at Start (Unix ns); sent
//     to every partition. With EventType and Projection empty, a question:
//     a join instance that just got a partition asks the others for every
//     expectation they learned, which they send as learned facts.
//
// # Versions
//
// Version 2 added Service and LinkedTraces (issue 14: clock skew by
// service, broken propagation) and flag 0x20 (Fact.Weight, issue 12's
// sampling weights). Version 3 added kinds 4 to 6 (issue 13: consumers
// without event id whose producer's trace another ingest instance
// resolved; expected projections learned by one join instance). Decode
// reads versions 1 to 3; Append writes 3. Upgrade the join instances before
// the ingest ones: an old join counts a batch of a newer version as
// rejected, reason version, and skips it (it never misreads one), so
// until it is upgraded it joins nothing of an upgraded ingest instance.
package factwire

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/lagscope/lagscope/analyzer"
)

// Version is the version byte of the batches Append writes.
const Version = 3

// Header is what a batch says of its producer, so that a consumer can tell a
// batch it has already applied (the same producer and sequence number).
type Header struct {
	// Producer identifies the publishing instance; random per process.
	Producer uint64
	// Seq numbers the producer's batches.
	Seq uint64
}

// Errors Decode returns, wrapped; check them with errors.Is.
var (
	// ErrVersion: the batch's version byte is not one this package reads.
	ErrVersion = errors.New("unknown factwire version")
	// ErrMalformed: the batch is truncated, has trailing bytes, or holds a
	// value out of range.
	ErrMalformed = errors.New("malformed fact batch")
)

const (
	flagNoEventID    = 0x01
	flagUUIDEventID  = 0x02
	flagKeyOfEventID = 0x04
	flagSameTrace    = 0x08
	flagNoCmdStart   = 0x10
	flagWeight       = 0x20
	flagsKnownV1     = 0x1f
	flagsKnown       = 0x3f
	// flagsResolved are a resolved fact's flags (with flagSameTrace or not):
	// the layout of kind 4.
	flagsResolved = flagNoEventID | flagNoCmdStart
)

// maxKind is the last kind of version 3 (learned).
const maxKind = analyzer.FactLearned

// maxWeight is the largest adjusted count: a threshold of 2^56-1.
const maxWeight = 1 << 56

// validWeight reports whether w is a Fact.Weight to send: an adjusted count.
func validWeight(w float64) bool { return w >= 1 && w <= maxWeight }

// minFactBytes is the least a fact takes on the wire (version 1): kind,
// flags, six one-byte indexes, version, span id, start and end deltas.
const minFactBytes = 2 + 6 + 1 + 8 + 1 + 1

// Encoder writes batches. Its dictionary scratch is reused between batches;
// the zero value is ready to use. Not safe for concurrent use.
type Encoder struct {
	dict  map[string]uint32
	order []string
	body  []byte
	// last holds each string field's previous value and index: facts of a
	// batch mostly repeat them, which spares the map lookup.
	last [7]struct {
		s string
		i uint32
	}
}

// Append appends to dst the batch of facts with header h. Facts of a kind
// other than append, project, query, resolved, project_span or learned are an
// error: they are not to leave the process (kind 0 marks parked facts).
func (e *Encoder) Append(dst []byte, h Header, facts []analyzer.Fact) ([]byte, error) {
	if e.dict == nil {
		e.dict = make(map[string]uint32)
	}
	clear(e.dict)
	e.order = e.order[:0]
	e.last = [7]struct {
		s string
		i uint32
	}{}
	body := e.body[:0]
	var prevTrace [16]byte
	var prevStart int64
	for i := range facts {
		f := &facts[i]
		if f.Kind < analyzer.FactAppend || f.Kind > maxKind {
			return dst, fmt.Errorf("encode fact %d: kind %v is not sent", i, f.Kind)
		}
		if f.Kind == analyzer.FactResolved {
			var err error
			if body, err = appendResolved(body, i, f, i > 0 && f.TraceID == prevTrace, prevStart); err != nil {
				return dst, err
			}
			prevTrace, prevStart = f.TraceID, f.Start
			continue
		}
		var flags byte
		if f.Weight != 0 {
			if !validWeight(f.Weight) {
				return dst, fmt.Errorf("encode fact %d: weight %v is not an adjusted count", i, f.Weight)
			}
			flags |= flagWeight
		}
		switch {
		case f.EventID == "":
			flags |= flagNoEventID
		case isUUIDText(f.EventID, &f.Event):
			flags |= flagUUIDEventID
		case analyzer.KeyOf(f.EventID) == f.Event:
			flags |= flagKeyOfEventID
		}
		if i > 0 && f.TraceID == prevTrace {
			flags |= flagSameTrace
		}
		if f.CommandStart == 0 {
			flags |= flagNoCmdStart
		}
		body = append(body, byte(f.Kind), flags)
		if flags&flagKeyOfEventID == 0 {
			body = append(body, f.Event[:]...)
		}
		if flags&(flagNoEventID|flagUUIDEventID) == 0 {
			body = binary.AppendUvarint(body, uint64(len(f.EventID)))
			body = append(body, f.EventID...)
		}
		for j, s := range [...]string{f.EventType, f.AggregateType, f.AggregateID, f.Command, f.Projection, f.Query, f.Service} {
			if s == "" {
				// Index 0, and last kept for the next fact: the empty
				// fields of a query between two facts of the same labels
				// would otherwise cost the second a lookup each.
				body = append(body, 0)
				continue
			}
			if l := &e.last[j]; s != l.s {
				l.s, l.i = s, e.index(s)
			}
			body = binary.AppendUvarint(body, uint64(e.last[j].i))
		}
		body = binary.AppendVarint(body, f.Version)
		if flags&flagNoCmdStart == 0 {
			body = binary.AppendVarint(body, f.Start-f.CommandStart)
		}
		if flags&flagSameTrace == 0 {
			body = append(body, f.TraceID[:]...)
		}
		body = append(body, f.SpanID[:]...)
		body = binary.AppendVarint(body, f.Start-prevStart)
		body = binary.AppendVarint(body, f.End-f.Start)
		if flags&flagWeight != 0 {
			body = binary.BigEndian.AppendUint64(body, math.Float64bits(f.Weight))
		}
		body = binary.AppendUvarint(body, f.LinkedTraces)
		prevTrace, prevStart = f.TraceID, f.Start
	}
	e.body = body
	dst = append(dst, Version)
	dst = binary.BigEndian.AppendUint64(dst, h.Producer)
	dst = binary.AppendUvarint(dst, h.Seq)
	dst = binary.AppendUvarint(dst, uint64(len(e.order)))
	for _, s := range e.order {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(facts)))
	return append(dst, body...), nil
}

// appendResolved appends resolved fact f, fact i of its batch, in its own
// layout: it carries no other field.
func appendResolved(body []byte, i int, f *analyzer.Fact, sameTrace bool, prevStart int64) ([]byte, error) {
	g := *f
	g.Kind, g.Event, g.TraceID, g.SpanID, g.Start, g.End = 0, analyzer.EventKey{}, [16]byte{}, [8]byte{}, 0, 0
	if g != (analyzer.Fact{}) {
		return body, fmt.Errorf("encode fact %d: a resolved fact carries only Event, TraceID, SpanID, Start and End", i)
	}
	flags := byte(flagsResolved)
	if sameTrace {
		flags |= flagSameTrace
	}
	body = append(body, byte(f.Kind), flags)
	body = append(body, f.Event[:]...)
	if !sameTrace {
		body = append(body, f.TraceID[:]...)
	}
	body = append(body, f.SpanID[:]...)
	body = binary.AppendVarint(body, f.Start-prevStart)
	return binary.AppendVarint(body, f.End-f.Start), nil
}

// index returns s's dictionary index, adding it.
func (e *Encoder) index(s string) uint32 {
	if s == "" {
		return 0
	}
	if i, ok := e.dict[s]; ok {
		return i
	}
	e.order = append(e.order, s)
	i := uint32(len(e.order))
	e.dict[s] = i
	return i
}

// Decode appends to dst the facts of batch b and returns them with b's
// header. The facts' strings are copies (they do not refer to b). It
// returns an error wrapping ErrVersion or ErrMalformed, and dst unchanged,
// when b is not a whole batch of a known version. A Decoder does the same
// with one allocation fewer per batch.
func Decode(dst []analyzer.Fact, b []byte) (Header, []analyzer.Fact, error) {
	var d Decoder
	return d.Decode(dst, b)
}

// Decoder decodes batches, reusing its dictionary scratch between them; the
// zero value is ready to use. Not safe for concurrent use.
type Decoder struct {
	dict []string
}

// Decode is the package's Decode. Every string of the batch (dictionary and
// event ids) is copied into one allocation, which the facts share: keeping
// one of its strings keeps the batch's (bounded by the batch's size).
func (dec *Decoder) Decode(dst []analyzer.Fact, b []byte) (Header, []analyzer.Fact, error) {
	var h Header
	if len(b) == 0 {
		return h, dst, fmt.Errorf("decode fact batch: empty: %w", ErrMalformed)
	}
	v := b[0]
	known := byte(flagsKnown)
	kinds := maxKind
	switch v {
	case Version:
	case 2:
		kinds = analyzer.FactQuery
	case 1:
		known, kinds = flagsKnownV1, analyzer.FactQuery
	default:
		return h, dst, fmt.Errorf("decode fact batch: version %d: %w", v, ErrVersion)
	}
	d := reader{b: b[1:]}
	h.Producer = d.uint64()
	h.Seq = d.uvarint()
	n := d.count(1)
	// The dictionary's bytes, then the count of facts: a first pass
	// measures them, so that one buffer holds every string of the batch.
	scan := d
	size := 0
	for range n {
		k := scan.uvarint()
		if scan.err == nil && k > uint64(len(scan.b)) {
			scan.err = errors.New("truncated string")
		}
		if scan.err != nil {
			break
		}
		size += int(k)
		scan.b = scan.b[k:]
	}
	nf := scan.count(minFactBytes)
	if scan.err != nil {
		d.err = scan.err
		return h, dst, d.fail()
	}
	// With room for a UUID text per fact (36 bytes; the usual event id):
	// other event ids take it if it is left, else their own allocation.
	arena := make([]byte, 0, size+36*nf)
	if cap(dec.dict) < n+1 {
		dec.dict = make([]string, 0, n+1)
	}
	dict := append(dec.dict[:0], "")
	for range n {
		dict = append(dict, d.strIn(&arena))
	}
	dec.dict = dict
	defer clear(dec.dict) // keep no string of the batch
	d.count(minFactBytes)
	if d.err != nil {
		return h, dst, d.fail()
	}
	out := dst
	var prevTrace [16]byte
	var prevStart int64
	for i := range nf {
		var f analyzer.Fact
		f.Kind = analyzer.FactKind(d.byte())
		flags := d.byte()
		if d.err == nil && (f.Kind < analyzer.FactAppend || f.Kind > kinds) {
			d.err = fmt.Errorf("fact %d: kind %d", i, f.Kind)
		}
		if d.err == nil && (flags&^known != 0 || bitsSet(flags&(flagNoEventID|flagUUIDEventID|flagKeyOfEventID)) > 1 || (i == 0 && flags&flagSameTrace != 0)) {
			d.err = fmt.Errorf("fact %d: flags %#x", i, flags)
		}
		if f.Kind == analyzer.FactResolved {
			if d.err == nil && flags&^flagSameTrace != flagsResolved {
				d.err = fmt.Errorf("fact %d: resolved flags %#x", i, flags)
			}
			d.bytes(f.Event[:])
			if flags&flagSameTrace != 0 {
				f.TraceID = prevTrace
			} else {
				d.bytes(f.TraceID[:])
			}
			d.bytes(f.SpanID[:])
			f.Start = d.delta(prevStart)
			f.End = d.delta(f.Start)
			if d.err != nil {
				return h, dst, d.fail()
			}
			prevTrace, prevStart = f.TraceID, f.Start
			out = append(out, f)
			continue
		}
		if flags&flagKeyOfEventID == 0 {
			d.bytes(f.Event[:])
		}
		switch {
		case flags&flagUUIDEventID != 0:
			n := len(arena)
			arena = appendUUID(arena, &f.Event)
			f.EventID = unsafe.String(&arena[n], 36)
		case flags&flagNoEventID == 0:
			f.EventID = d.strIn(&arena)
			if f.EventID == "" && d.err == nil {
				d.err = fmt.Errorf("fact %d: empty event id without its flag", i)
			}
		}
		if flags&flagKeyOfEventID != 0 {
			f.Event = analyzer.KeyOf(f.EventID)
		}
		strs := []*string{&f.EventType, &f.AggregateType, &f.AggregateID, &f.Command, &f.Projection, &f.Query, &f.Service}
		if v == 1 {
			strs = strs[:6] // no Service in version 1
		}
		for _, p := range strs {
			if x := d.uvarint(); x < uint64(len(dict)) {
				*p = dict[x]
			} else if d.err == nil {
				d.err = fmt.Errorf("fact %d: string index %d of %d", i, x, len(dict))
			}
		}
		f.Version = d.varint()
		if flags&flagNoCmdStart == 0 {
			f.CommandStart = d.varint() // start - command start, resolved below
		}
		if flags&flagSameTrace != 0 {
			f.TraceID = prevTrace
		} else {
			d.bytes(f.TraceID[:])
		}
		d.bytes(f.SpanID[:])
		f.Start = d.delta(prevStart)
		f.End = d.delta(f.Start)
		if flags&flagWeight != 0 {
			f.Weight = math.Float64frombits(d.uint64())
			if d.err == nil && !validWeight(f.Weight) {
				d.err = fmt.Errorf("fact %d: weight %v", i, f.Weight)
			}
		}
		if v >= 2 {
			f.LinkedTraces = d.uvarint()
		}
		if d.err != nil {
			return h, dst, d.fail()
		}
		if flags&flagNoCmdStart == 0 {
			// Deltas wrap as they did when encoded, so every int64 survives.
			if f.CommandStart = f.Start - f.CommandStart; f.CommandStart == 0 {
				return h, dst, fmt.Errorf("decode fact batch: fact %d: zero command start without its flag: %w", i, ErrMalformed)
			}
		}
		prevTrace, prevStart = f.TraceID, f.Start
		out = append(out, f)
	}
	if len(d.b) != 0 {
		return h, dst, fmt.Errorf("decode fact batch: %d bytes after the last fact: %w", len(d.b), ErrMalformed)
	}
	return h, out, nil
}

// isUUIDText reports whether s is the canonical lowercase text of k.
func isUUIDText(s string, k *analyzer.EventKey) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	for j, i := range uuidHexAt {
		if s[i] != hexDigits[k[j]>>4] || s[i+1] != hexDigits[k[j]&15] {
			return false
		}
	}
	return true
}

// uuidHexAt are the positions of the 16 hex pairs of a canonical UUID.
var uuidHexAt = [16]uint8{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

const hexDigits = "0123456789abcdef"

// appendUUID appends the canonical lowercase text of k.
func appendUUID(dst []byte, k *analyzer.EventKey) []byte {
	var buf [32]byte
	hex.Encode(buf[:], k[:])
	dst = append(dst, buf[0:8]...)
	dst = append(dst, '-')
	dst = append(dst, buf[8:12]...)
	dst = append(dst, '-')
	dst = append(dst, buf[12:16]...)
	dst = append(dst, '-')
	dst = append(dst, buf[16:20]...)
	dst = append(dst, '-')
	return append(dst, buf[20:32]...)
}

func bitsSet(b byte) int {
	n := 0
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}

// reader reads a batch; the first error sticks and later reads return zero.
type reader struct {
	b   []byte
	err error
}

func (d *reader) fail() error {
	return fmt.Errorf("decode fact batch: %v: %w", d.err, ErrMalformed)
}

func (d *reader) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errors.New("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *reader) bytes(dst []byte) {
	if d.err != nil {
		return
	}
	if len(d.b) < len(dst) {
		d.err = errors.New("truncated")
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

func (d *reader) uint64() uint64 {
	var b [8]byte
	d.bytes(b[:])
	return binary.BigEndian.Uint64(b[:])
}

func (d *reader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *reader) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// delta reads a varint and adds it to base, wrapping as the encoder's
// subtraction did.
func (d *reader) delta(base int64) int64 { return base + d.varint() }

// count reads a count of items taking at least min bytes each, refusing one
// the rest of the batch cannot hold (so a forged count allocates nothing).
func (d *reader) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.err = fmt.Errorf("count %d exceeds the %d bytes left", n, len(d.b))
		return 0
	}
	if n > math.MaxInt32 {
		return 0
	}
	return int(n)
}

// strIn reads a string into arena when it has room left (never growing
// it: the bytes a string refers to are never written again), else into a
// string of its own.
func (d *reader) strIn(arena *[]byte) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errors.New("truncated string")
		return ""
	}
	if n == 0 {
		return ""
	}
	if n > uint64(cap(*arena)-len(*arena)) {
		s := string(d.b[:n])
		d.b = d.b[n:]
		return s
	}
	a := *arena
	k := len(a)
	a = append(a, d.b[:n]...)
	*arena = a
	d.b = d.b[n:]
	return unsafe.String(&a[k], int(n))
}
