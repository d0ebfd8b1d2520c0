package collector

import (
	"bytes"
	"encoding/binary"
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// decodeTraces decodes an OTLP ExportTraceServiceRequest. With lazy set it
// first tries decodeLazy and falls back to pdata when that declines, so that
// it fails exactly when pdata fails, with pdata's error.
func decodeTraces(buf []byte, lazy bool) (ptrace.Traces, error) {
	if lazy {
		if td, ok := decodeLazy(buf); ok {
			return td, nil
		}
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(buf); err != nil {
		return ptrace.Traces{}, err
	}
	return req.Traces(), nil
}

// decodeLazy decodes what the analysis reads of a request and skips the
// rest: the resource's service.name; of each span its ids, parent, name,
// kind, times, status code, attributes named cqrs.* and messaging.*, events
// named cqrs.event (with those attributes) and the ids of its links. It
// checks the whole request at least as strictly as pdata does, so that a
// request it accepts pdata accepts too; it declines (false) anything it does
// not handle exactly like pdata (unknown fields, groups, duplicate kept
// attributes, kept attributes holding arrays or maps, deep nesting), and
// the caller then decodes with pdata.
func decodeLazy(buf []byte) (ptrace.Traces, bool) {
	td := ptrace.NewTraces()
	d := lazyDecoder{buf: buf}
	for d.next() {
		if d.num != 1 {
			return td, false
		}
		if _, b, ok := d.field(d.wt, wireLen); ok && !decodeResourceSpans(b, td.ResourceSpans().AppendEmpty()) {
			return td, false
		}
	}
	return td, d.done()
}

const (
	wireVarint = 0
	wireI64    = 1
	wireLen    = 2
	wireI32    = 5
)

// maxLazyDepth bounds the nesting of attribute values decodeLazy checks
// itself; deeper ones go to pdata.
const maxLazyDepth = 8

// lazyDecoder reads protobuf wire format from buf; err is set on the first
// malformed input and stays set.
type lazyDecoder struct {
	buf     []byte
	pos     int
	num, wt int // of the field next read
	err     bool
}

func (d *lazyDecoder) varint() uint64 {
	var n uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if d.pos >= len(d.buf) {
			break
		}
		b := d.buf[d.pos]
		d.pos++
		n |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return n
		}
	}
	d.err = true
	return 0
}

func (d *lazyDecoder) tag() (int, int) {
	t := d.varint()
	num := t >> 3
	if d.err || num == 0 || num > math.MaxInt32 {
		d.err = true
		return 0, -1
	}
	return int(num), int(t & 7)
}

func (d *lazyDecoder) bytes() []byte {
	n := d.varint()
	if d.err || n > uint64(len(d.buf)-d.pos) {
		d.err = true
		return nil
	}
	b := d.buf[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return b
}

func (d *lazyDecoder) fixed64() uint64 {
	if len(d.buf)-d.pos < 8 {
		d.err = true
		return 0
	}
	v := binary.LittleEndian.Uint64(d.buf[d.pos:])
	d.pos += 8
	return v
}

func (d *lazyDecoder) fixed32() {
	if len(d.buf)-d.pos < 4 {
		d.err = true
		return
	}
	d.pos += 4
}

// field reads the value of a field of wire type wt when it is want, and
// reports whether it did. b is the content of a length-delimited field.
func (d *lazyDecoder) field(wt, want int) (v uint64, b []byte, ok bool) {
	if wt != want {
		d.err = true
		return 0, nil, false
	}
	switch wt {
	case wireVarint:
		v = d.varint()
	case wireI64:
		v = d.fixed64()
	case wireLen:
		b = d.bytes()
	case wireI32:
		d.fixed32()
	}
	return v, b, !d.err
}

// next reads the next field's tag into num and wt, and reports whether
// there is one; the caller stops at false and checks err.
func (d *lazyDecoder) next() bool {
	if d.err || d.pos >= len(d.buf) {
		return false
	}
	d.num, d.wt = d.tag()
	return !d.err
}

// skip reads a field that decodeLazy does not keep: its wire type must be
// want, and a length-delimited one that pdata decodes as a message must be
// valid (check).
func (d *lazyDecoder) skip(want int, check func([]byte) bool) {
	_, b, ok := d.field(d.wt, want)
	if ok && check != nil && !check(b) {
		d.err = true
	}
}

// fail declines the message.
func (d *lazyDecoder) fail() { d.err = true }

// done reports whether the message was read to its end without error.
func (d *lazyDecoder) done() bool { return !d.err && d.pos == len(d.buf) }

func decodeResourceSpans(buf []byte, rs ptrace.ResourceSpans) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeResource(b, rs.Resource()) {
				d.fail()
			}
		case 2:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeScopeSpans(b, rs.ScopeSpans().AppendEmpty()) {
				d.fail()
			}
		case 3:
			d.skip(wireLen, nil)
		default:
			d.fail()
		}
	}
	return d.done()
}

func decodeResource(buf []byte, res pcommon.Resource) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeAttr(b, res.Attributes(), isServiceName) {
				d.fail()
			}
		case 2:
			d.skip(wireVarint, nil)
		case 3:
			d.skip(wireLen, checkEntityRef)
		default:
			d.fail()
		}
	}
	return d.done()
}

func checkEntityRef(buf []byte) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		if d.num < 1 || d.num > 4 {
			d.fail()
		}
		d.skip(wireLen, nil)
	}
	return d.done()
}

func checkScope(buf []byte) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1, 2:
			d.skip(wireLen, nil)
		case 3:
			d.skip(wireLen, checkKeyValue)
		case 4:
			d.skip(wireVarint, nil)
		default:
			d.fail()
		}
	}
	return d.done()
}

func decodeScopeSpans(buf []byte, ss ptrace.ScopeSpans) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1:
			d.skip(wireLen, checkScope)
		case 2:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeSpan(b, ss.Spans().AppendEmpty()) {
				d.fail()
			}
		case 3:
			d.skip(wireLen, nil)
		default:
			d.fail()
		}
	}
	return d.done()
}

// kept reports whether the analysis reads a span or event attribute.
func kept(k []byte) bool {
	return bytes.HasPrefix(k, []byte("cqrs.")) || bytes.HasPrefix(k, []byte("messaging."))
}

// internKey returns k as a string, without a copy for the names of the span
// conventions.
func internKey(k []byte) string {
	switch string(k) {
	case "cqrs.operation":
		return "cqrs.operation"
	case "cqrs.command.name":
		return "cqrs.command.name"
	case "cqrs.query.name":
		return "cqrs.query.name"
	case "cqrs.event.id":
		return "cqrs.event.id"
	case "cqrs.event.type":
		return "cqrs.event.type"
	case "cqrs.aggregate.type":
		return "cqrs.aggregate.type"
	case "cqrs.aggregate.id":
		return "cqrs.aggregate.id"
	case "cqrs.aggregate.version":
		return "cqrs.aggregate.version"
	case "cqrs.projection":
		return "cqrs.projection"
	case "messaging.message.id":
		return "messaging.message.id"
	case "messaging.operation.type":
		return "messaging.operation.type"
	case "messaging.operation":
		return "messaging.operation"
	case "messaging.system":
		return "messaging.system"
	case "messaging.destination.name":
		return "messaging.destination.name"
	case "messaging.consumer.group.name":
		return "messaging.consumer.group.name"
	case "service.name":
		return "service.name"
	}
	return string(k)
}

// internValue returns v as a string, without a copy for the values of
// cqrs.operation and messaging.operation.type.
func internValue(v []byte) string {
	switch string(v) {
	case "command":
		return "command"
	case "append":
		return "append"
	case "project":
		return "project"
	case "query":
		return "query"
	case "publish":
		return "publish"
	case "send":
		return "send"
	case "create":
		return "create"
	case "process":
		return "process"
	case "receive":
		return "receive"
	}
	return string(v)
}

func isServiceName(k []byte) bool { return string(k) == "service.name" }

func decodeSpan(buf []byte, sp ptrace.Span) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1:
			_, b, ok := d.field(d.wt, wireLen)
			if ok && len(b) != 0 && len(b) != 16 {
				d.fail()
			}
			sp.SetTraceID(pcommon.TraceID(id16(b)))
		case 2, 4:
			_, b, ok := d.field(d.wt, wireLen)
			if ok && len(b) != 0 && len(b) != 8 {
				d.fail()
			}
			if d.num == 2 {
				sp.SetSpanID(pcommon.SpanID(id8(b)))
			} else {
				sp.SetParentSpanID(pcommon.SpanID(id8(b)))
			}
		case 3:
			d.skip(wireLen, nil)
		case 5:
			if _, b, ok := d.field(d.wt, wireLen); ok {
				sp.SetName(string(b))
			}
		case 6:
			v, _, _ := d.field(d.wt, wireVarint)
			sp.SetKind(ptrace.SpanKind(int32(v)))
		case 7:
			v, _, _ := d.field(d.wt, wireI64)
			sp.SetStartTimestamp(pcommon.Timestamp(v))
		case 8:
			v, _, _ := d.field(d.wt, wireI64)
			sp.SetEndTimestamp(pcommon.Timestamp(v))
		case 9:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeAttr(b, sp.Attributes(), kept) {
				d.fail()
			}
		case 10, 12, 14:
			d.skip(wireVarint, nil)
		case 11:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeEvent(b, sp.Events()) {
				d.fail()
			}
		case 13:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeLink(b, sp.Links()) {
				d.fail()
			}
		case 15:
			if _, b, ok := d.field(d.wt, wireLen); ok && !decodeSpanStatus(b, sp.Status()) {
				d.fail()
			}
		case 16:
			d.skip(wireI32, nil)
		default:
			d.fail()
		}
	}
	return d.done()
}

func id16(b []byte) (id [16]byte) { copy(id[:], b); return id }
func id8(b []byte) (id [8]byte)   { copy(id[:], b); return id }

// decodeEvent keeps an event named cqrs.event and checks any other.
func decodeEvent(buf []byte, evs ptrace.SpanEventSlice) bool {
	// The name may come after the attributes: check first, then decode.
	var name []byte
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1:
			d.skip(wireI64, nil)
		case 2:
			_, name, _ = d.field(d.wt, wireLen)
		case 3:
			d.skip(wireLen, checkKeyValue)
		case 4:
			d.skip(wireVarint, nil)
		default:
			d.fail()
		}
	}
	if !d.done() || string(name) != "cqrs.event" {
		return d.done()
	}
	ev := evs.AppendEmpty()
	ev.SetName("cqrs.event")
	d = lazyDecoder{buf: buf}
	for d.next() {
		_, b, _ := d.field(d.wt, d.wt)
		if d.num == 3 && !decodeAttr(b, ev.Attributes(), kept) {
			return false
		}
	}
	return d.done()
}

func decodeLink(buf []byte, links ptrace.SpanLinkSlice) bool {
	l := links.AppendEmpty()
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1:
			_, b, ok := d.field(d.wt, wireLen)
			if ok && len(b) != 0 && len(b) != 16 {
				d.fail()
			}
			l.SetTraceID(pcommon.TraceID(id16(b)))
		case 2:
			_, b, ok := d.field(d.wt, wireLen)
			if ok && len(b) != 0 && len(b) != 8 {
				d.fail()
			}
			l.SetSpanID(pcommon.SpanID(id8(b)))
		case 3:
			d.skip(wireLen, nil)
		case 4:
			d.skip(wireLen, checkKeyValue)
		case 5:
			d.skip(wireVarint, nil)
		case 6:
			d.skip(wireI32, nil)
		default:
			d.fail()
		}
	}
	return d.done()
}

func decodeSpanStatus(buf []byte, st ptrace.Status) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 2:
			d.skip(wireLen, nil)
		case 3:
			v, _, _ := d.field(d.wt, wireVarint)
			st.SetCode(ptrace.StatusCode(int32(v)))
		default:
			d.fail()
		}
	}
	return d.done()
}

// decodeAttr decodes a KeyValue into m when keep accepts its key, else
// checks it.
func decodeAttr(buf []byte, m pcommon.Map, keep func([]byte) bool) bool {
	var key, val []byte
	hasKey, hasVal := false, false
	d := lazyDecoder{buf: buf}
	for d.next() {
		_, b, _ := d.field(d.wt, wireLen)
		switch {
		case d.num == 1 && !hasKey:
			key, hasKey = b, true
		case d.num == 2 && !hasVal:
			val, hasVal = b, true
		default:
			d.fail() // a repeated field: pdata's last one wins
		}
	}
	if !d.done() {
		return false
	}
	if !keep(key) {
		return !hasVal || checkAnyValue(val, 0)
	}
	k := internKey(key)
	if _, dup := m.Get(k); dup {
		return false // pdata keeps both; a Map cannot
	}
	if m.Len() == 0 {
		m.EnsureCapacity(8) // grow once, not at each of the first kept attributes
	}
	v := m.PutEmpty(k)
	return !hasVal || decodeAnyValue(val, v)
}

// decodeAnyValue decodes a scalar AnyValue into v; arrays and maps decline.
func decodeAnyValue(buf []byte, v pcommon.Value) bool {
	d := lazyDecoder{buf: buf}
	set := false
	for d.next() {
		if set {
			return false // one of the oneof only
		}
		set = true
		switch d.num {
		case 1:
			if _, b, ok := d.field(d.wt, wireLen); ok {
				v.SetStr(internValue(b))
			}
		case 7:
			if _, b, ok := d.field(d.wt, wireLen); ok {
				v.SetEmptyBytes().FromRaw(b)
			}
		case 2:
			x, _, _ := d.field(d.wt, wireVarint)
			v.SetBool(x != 0)
		case 3:
			x, _, _ := d.field(d.wt, wireVarint)
			v.SetInt(int64(x))
		case 4:
			x, _, _ := d.field(d.wt, wireI64)
			v.SetDouble(math.Float64frombits(x))
		default:
			d.fail()
		}
	}
	return d.done()
}

func checkKeyValue(buf []byte) bool { return checkKV(buf, 0) }

func checkKV(buf []byte, depth int) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1:
			d.skip(wireLen, nil)
		case 2:
			if _, b, ok := d.field(d.wt, wireLen); ok && !checkAnyValue(b, depth) {
				d.fail()
			}
		default:
			d.fail()
		}
	}
	return d.done()
}

func checkAnyValue(buf []byte, depth int) bool {
	if depth > maxLazyDepth {
		return false
	}
	d := lazyDecoder{buf: buf}
	for d.next() {
		switch d.num {
		case 1, 7:
			d.skip(wireLen, nil)
		case 2, 3:
			d.skip(wireVarint, nil)
		case 4:
			d.skip(wireI64, nil)
		case 5, 6:
			_, b, ok := d.field(d.wt, wireLen)
			if ok && !checkValues(b, d.num == 5, depth+1) {
				d.fail()
			}
		default:
			d.fail()
		}
	}
	return d.done()
}

// checkValues checks an ArrayValue (array) or KeyValueList.
func checkValues(buf []byte, array bool, depth int) bool {
	d := lazyDecoder{buf: buf}
	for d.next() {
		_, b, ok := d.field(d.wt, wireLen)
		switch {
		case d.num != 1:
			d.fail()
		case ok && array && !checkAnyValue(b, depth):
			d.fail()
		case ok && !array && !checkKV(b, depth):
			d.fail()
		}
	}
	return d.done()
}
