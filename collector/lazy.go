package collector

import (
	"bytes"
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"
)

// decodeTraces decodes an OTLP ExportTraceServiceRequest. With a selective
// decoder (sel non-nil) it tries that first; when it declines, pdata decodes
// the request and fb says why it declined. It fails exactly when pdata
// fails, with pdata's error.
func decodeTraces(buf []byte, sel *selectiveDecoder) (td ptrace.Traces, fb fallbackReason, _ error) {
	if sel != nil {
		if td, fb = sel.decode(buf); fb == fallbackNone {
			return td, fb, nil
		}
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(buf); err != nil {
		return ptrace.Traces{}, fb, err
	}
	return req.Traces(), fb, nil
}

// fallbackReason says why the selective decoder declined a request, which
// pdata then decodes; its String is the reason label of
// lagscope_decode_fallbacks_total.
type fallbackReason uint8

const (
	fallbackNone fallbackReason = iota
	// A field schema.go does not name, such as one of a newer schema:
	// pdata skips or decodes it, the selective decoder cannot check it.
	fallbackUnknownField
	// A field of the deprecated group wire types.
	fallbackGroup
	// A KeyValue's key or value, or an AnyValue's value, given twice:
	// pdata's last one wins.
	fallbackRepeatedField
	// A kept attribute key given twice in one map: pdata keeps both, a
	// pcommon.Map cannot.
	fallbackDuplicateKeptAttribute
	// A kept attribute holding an array or a map.
	fallbackKeptComplexValue
	// Attribute values nested deeper than maxLazyDepth.
	fallbackTooDeep
	// A 10-byte varint with bits past the 64th: protowire refuses it,
	// pdata's decoder drops those bits and may accept the request
	// (TestLazyDifferential found one, in a tag).
	fallbackVarintOverflow
	// Input that pdata refuses too (checkLazy checks this): a truncated
	// field, a bad tag, a wrong wire type or an id of the wrong length.
	fallbackMalformed
	numFallbackReasons
)

func (r fallbackReason) String() string {
	return [...]string{
		"none",
		"unknown_field",
		"group",
		"repeated_field",
		"duplicate_kept_attribute",
		"kept_complex_value",
		"too_deep",
		"varint_overflow",
		"malformed",
	}[r]
}

// maxLazyDepth bounds the nesting of attribute values the selective decoder
// checks itself; deeper ones go to pdata.
const maxLazyDepth = 8

// selectiveDecoder decodes what a Selection keeps of a request and skips
// the rest: of each span the fields Selection names as always kept, the
// attributes and events it names. It checks the whole request at least as
// strictly as pdata does, so that a request it accepts pdata accepts too;
// it declines (with a reason) anything it does not handle exactly like
// pdata. It is safe for concurrent use: it holds only its sets.
type selectiveDecoder struct {
	resourceAttrs, spanAttrs, eventNames, eventAttrs stringSet
	values                                           stringSet
}

func newSelectiveDecoder(s Selection) *selectiveDecoder {
	return &selectiveDecoder{
		resourceAttrs: newStringSet(s.ResourceAttributes),
		spanAttrs:     newStringSet(s.SpanAttributes),
		eventNames:    newStringSet(s.EventNames),
		eventAttrs:    newStringSet(s.EventAttributes),
		values:        newStringSet(s.Values),
	}
}

// decode decodes an ExportTraceServiceRequest, or says why it declines.
func (s *selectiveDecoder) decode(buf []byte) (ptrace.Traces, fallbackReason) {
	td, _, fb := s.decodeWithin(buf, unlimited, onePassBudget{bound: math.MaxInt64})
	return td, fb
}

// onePassBudget bounds what decodeWithin may count: bound, the estimate
// of the whole request, and, unless perByte is 0, the estimate of the items
// counted so far, perByte per byte of the request before the last one plus
// slack (count).
type onePassBudget struct {
	bound, perByte, slack int64
}

// decodeWithin is decode counting, as scanProto does, what pdata would make
// of the request: it declines with overLimit at the first count past l, at
// a message nested deeper than l.depth, or once counts.decodedSize exceeds
// what budget allows. It allocates only for what it keeps, so that what it
// allocated is at most that size, and at most the bound. What it accepts,
// scanProto accepts with the same counts (TestLazyDifferential checks both).
func (s *selectiveDecoder) decodeWithin(buf []byte, l decodeLimits, budget onePassBudget) (ptrace.Traces, requestCounts, fallbackReason) {
	sc := getScratch()
	d := lazyRequest{
		selectiveDecoder: s, limits: l, strs: &sc.strs, kept: sc.kept[:0],
		est: int64(len(buf)), encoded: int64(len(buf)), capacity: int64(cap(buf)),
		bound: budget.bound, perByte: budget.perByte, slack: budget.slack,
	}
	defer func() { sc.kept = d.kept; putScratch(sc) }() // kept as grown
	td := ptrace.NewTraces()
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case exportTraceServiceRequestResourceSpans:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.resources, math.MaxInt, resourceCost, b)) {
				r.decline(d.resourceSpans(b, td.ResourceSpans().AppendEmpty()))
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return td, d.counts, r.fb
}

// overLimit is how decodeWithin declines at a limit or past its bound. It is
// no fallback, and no label of lagscope_decode_fallbacks_total: the caller
// scans the request, which refuses it or leaves it to pdata, and counts
// the fallback then.
const overLimit = numFallbackReasons

// unlimited are limits no request reaches.
var unlimited = decodeLimits{spans: math.MaxInt, links: math.MaxInt, events: math.MaxInt, attrs: math.MaxInt, depth: math.MaxInt}

// lazyRequest is the state of one request's decoding: what it counted, and
// the strings it shares.
type lazyRequest struct {
	*selectiveDecoder
	limits decodeLimits
	counts requestCounts
	est    int64 // counts.decodedSize so far
	bound  int64
	// perByte and slack bound est-encoded by the offset of the item counted
	// last (count); perByte 0 does not.
	perByte, slack   int64
	encoded          int64 // len of the request
	capacity, offset int64 // cap of the request; of the item counted last
	strs             *stringCache
	kept             []keptAttr // the attributes kept of the messages being decoded, in sc
}

// count adds one item, whose content is b, to *n, which may not exceed
// limit, and cost to the estimate, which may not exceed the bound. With a
// perByte, the cost of what it counted may not exceed perByte per byte of
// the request before the item either, plus slack: so a bomb of small items
// (a million empty links in 2 MB, each 128 bytes to pdata) stops after
// some hundred of them, not at a limit or at the bound, which the whole
// request sets. The item's offset is its capacity's distance from the
// request's: the decoder (and protowire.ConsumeBytes) only ever slice the
// request with two indices; a b of nil (an entity reference's key) keeps
// the last offset.
func (d *lazyRequest) count(n *int, limit int, cost int64, b []byte) fallbackReason {
	*n++
	d.est += cost
	if b != nil {
		d.offset = d.capacity - int64(cap(b))
	}
	if *n > limit || d.est > d.bound || (d.perByte > 0 && d.est-d.encoded > d.perByte*d.offset+d.slack) {
		return overLimit
	}
	return fallbackNone
}

// attr counts an attribute, of content b: a key-value, an array element
// or an entity reference or one of its keys (of content nil), as
// scanProto does.
func (d *lazyRequest) attr(b []byte) fallbackReason {
	return d.count(&d.counts.attrs, d.limits.attrs, attributeCost, b)
}

// nested checks the scan depth of a message it descends into: scanProto
// refuses a non-empty message nested deeper than the limit.
func (d *lazyRequest) nested(b []byte, depth int) fallbackReason {
	if len(b) > 0 && depth > d.limits.depth {
		return overLimit
	}
	return fallbackNone
}

// wireReader reads the fields of one encoded message in turn, with
// protowire. fb is set at the first field it declines and stays set; next
// is then false.
//
// It advances an index rather than re-slicing b: a slice header written
// through the pointer takes a GC write barrier, and the decoder's
// allocations keep the GC busy. Re-slicing took BenchmarkDecode/lazy from
// about 375 to 515 µs per request (one core, same run).
type wireReader struct {
	b   []byte
	i   int              // of the next byte to read
	num protowire.Number // of the field last read by next
	typ protowire.Type
	fb  fallbackReason
}

// next reads the next field's tag, and reports whether there is one to read.
func (r *wireReader) next() bool {
	if r.fb != fallbackNone || r.i >= len(r.b) {
		return false
	}
	// One-byte tags (fields 1 to 15) inline: nearly all of them.
	if t := r.b[r.i]; t < 0x80 && t >= 1<<3 && t&7 < 3 {
		r.num, r.typ = protowire.Number(t>>3), protowire.Type(t&7)
		r.i++
		return true
	}
	return r.nextTag()
}

// nextTag is next for the tags it does not read inline.
func (r *wireReader) nextTag() bool {
	num, typ, n := protowire.ConsumeTag(r.b[r.i:])
	if n < 0 {
		r.fb = consumeFailed(r.b[r.i:])
		if _, m := protowire.ConsumeVarint(r.b[r.i:]); m > 0 {
			// A whole varint, but a field number outside protobuf's range
			// (0, or above 2^29-1): pdata takes it for an unknown field
			// and skips it (FuzzDecodeProto found one).
			r.fb = fallbackUnknownField
		}
		return false
	}
	if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
		r.fb = fallbackGroup
		return false
	}
	r.num, r.typ = num, typ
	r.i += n
	return true
}

// want checks that the field has the wire type its declaration gives it:
// pdata refuses any other.
func (r *wireReader) want(typ protowire.Type) bool {
	if r.typ != typ {
		r.fb = fallbackMalformed
		return false
	}
	return true
}

// bytes reads the content of a length-delimited field.
func (r *wireReader) bytes() ([]byte, bool) {
	// One-byte lengths inline, as in next.
	if r.typ == protowire.BytesType && r.i < len(r.b) && r.b[r.i] < 0x80 {
		start := r.i + 1
		if end := start + int(r.b[r.i]); end <= len(r.b) {
			r.i = end
			return r.b[start:end], true
		}
	}
	return r.bytesSlow()
}

func (r *wireReader) bytesSlow() ([]byte, bool) {
	if !r.want(protowire.BytesType) {
		return nil, false
	}
	v, n := protowire.ConsumeBytes(r.b[r.i:])
	if n < 0 {
		r.fb = consumeFailed(r.b[r.i:])
		return nil, false
	}
	r.i += n
	return v, true
}

func (r *wireReader) varint() uint64 {
	if !r.want(protowire.VarintType) {
		return 0
	}
	v, n := protowire.ConsumeVarint(r.b[r.i:])
	if n < 0 {
		r.fb = consumeFailed(r.b[r.i:])
		return 0
	}
	r.i += n
	return v
}

func (r *wireReader) fixed64() uint64 {
	if !r.want(protowire.Fixed64Type) {
		return 0
	}
	v, n := protowire.ConsumeFixed64(r.b[r.i:])
	if n < 0 {
		r.fb = fallbackMalformed
		return 0
	}
	r.i += n
	return v
}

// skip reads a field that is not kept and that pdata decodes as a scalar of
// wire type typ.
func (r *wireReader) skip(typ protowire.Type) {
	if !r.want(typ) {
		return
	}
	n := protowire.ConsumeFieldValue(r.num, r.typ, r.b[r.i:])
	if n < 0 {
		r.fb = consumeFailed(r.b[r.i:])
		return
	}
	r.i += n
}

// consumeFailed returns why protowire could not read the varint (a tag, a
// length or a value) or fixed value at the start of b: malformed, unless it
// is a 10-byte varint whose last byte has bits past the 64th, which
// protowire refuses and pdata's decoder, dropping them, accepts.
func consumeFailed(b []byte) fallbackReason {
	if len(b) >= 10 && b[9] > 1 && b[9] < 0x80 {
		for _, c := range b[:9] {
			if c < 0x80 {
				return fallbackMalformed
			}
		}
		return fallbackVarintOverflow
	}
	return fallbackMalformed
}

// decline declines the message for reason fb, unless it is fallbackNone or
// the message was declined already.
func (r *wireReader) decline(fb fallbackReason) {
	if r.fb == fallbackNone {
		r.fb = fb
	}
}

// accept is decline reporting whether the message is still accepted.
func (r *wireReader) accept(fb fallbackReason) bool {
	r.decline(fb)
	return r.fb == fallbackNone
}

// The scan depths of the messages below (the request's is 0): what nests
// deeper are attribute values, whose depth the check functions follow.
const (
	depthResourceKeyValue = 3 // request, resource spans, resource, key-value
	depthScopeKeyValue    = 4 // ..., scope spans, scope, key-value
	depthSpanKeyValue     = 4 // ..., scope spans, span, key-value
	depthEventKeyValue    = 5 // ..., span, event or link, key-value

	checkedAlready = -1 // for attribute: the key-value was checked and counted
)

func (d *lazyRequest) resourceSpans(buf []byte, rs ptrace.ResourceSpans) fallbackReason {
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case resourceSpansResource:
			if b, ok := r.bytes(); ok {
				r.decline(d.resource(b, rs.Resource()))
			}
		case resourceSpansScopeSpans:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.scopes, math.MaxInt, scopeCost, b)) {
				r.decline(d.scopeSpans(b, rs.ScopeSpans().AppendEmpty()))
			}
		case resourceSpansSchemaURL:
			r.skip(protowire.BytesType)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

func (d *lazyRequest) resource(buf []byte, res pcommon.Resource) fallbackReason {
	base := len(d.kept)
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case resourceAttributes:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.attribute(b, res.Attributes(), base, &d.resourceAttrs, depthResourceKeyValue))
			}
		case resourceDroppedAttributesCount:
			r.skip(protowire.VarintType)
		case resourceEntityRefs:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.checkEntityRef(b))
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	d.putKept(res.Attributes(), base)
	return r.fb
}

func (d *lazyRequest) checkEntityRef(buf []byte) fallbackReason {
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case entityRefSchemaURL, entityRefType:
			r.skip(protowire.BytesType)
		case entityRefIDKeys, entityRefDescriptionKeys:
			if r.skip(protowire.BytesType); r.fb == fallbackNone {
				r.decline(d.attr(nil)) // pdata makes a string of each key
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

func (d *lazyRequest) checkScope(buf []byte) fallbackReason {
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case instrumentationScopeName, instrumentationScopeVersion:
			r.skip(protowire.BytesType)
		case instrumentationScopeAttributes:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.checkKeyValue(b, 0, depthScopeKeyValue))
			}
		case instrumentationScopeDroppedAttributesCount:
			r.skip(protowire.VarintType)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

func (d *lazyRequest) scopeSpans(buf []byte, ss ptrace.ScopeSpans) fallbackReason {
	// Sized once: growing the slice of span pointers span by span copied
	// them under the GC's write barriers. At most for a Collector's batch,
	// so that a bomb of empty spans does not get a slice for all of them.
	if n := min(countSpans(buf), d.limits.spans-d.counts.spans, maxPresizedSpans); n > 1 {
		ss.Spans().EnsureCapacity(n)
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case scopeSpansScope:
			if b, ok := r.bytes(); ok {
				r.decline(d.checkScope(b))
			}
		case scopeSpansSpans:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.spans, d.limits.spans, spanCost, b)) {
				r.decline(d.span(b, ss.Spans().AppendEmpty()))
			}
		case scopeSpansSchemaURL:
			r.skip(protowire.BytesType)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

// maxPresizedSpans is the batch processor's default send_batch_size.
const maxPresizedSpans = 8192

// countSpans counts the spans of an encoded ScopeSpans, reading tags and
// lengths only, up to the first field it cannot read.
func countSpans(buf []byte) int {
	n := 0
	for i := 0; i < len(buf); {
		num, typ, m := protowire.ConsumeTag(buf[i:])
		if m < 0 {
			break
		}
		i += m
		if m = protowire.ConsumeFieldValue(num, typ, buf[i:]); m < 0 {
			break
		}
		i += m
		if num == scopeSpansSpans && typ == protowire.BytesType {
			n++
		}
	}
	return n
}

// thresholdKey marks a tracestate that may carry an OpenTelemetry sampling
// threshold (ot=th:...), the only part of it the analysis reads.
var thresholdKey = []byte("th:")

func (d *lazyRequest) span(buf []byte, sp ptrace.Span) fallbackReason {
	base := len(d.kept)
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case spanTraceID:
			if b, ok := r.bytes(); ok {
				sp.SetTraceID(pcommon.TraceID(r.id16(b)))
			}
		case spanSpanID:
			if b, ok := r.bytes(); ok {
				sp.SetSpanID(pcommon.SpanID(r.id8(b)))
			}
		case spanParentSpanID:
			if b, ok := r.bytes(); ok {
				sp.SetParentSpanID(pcommon.SpanID(r.id8(b)))
			}
		case spanTraceState:
			// Kept only when it may hold a sampling threshold (ot=th:...),
			// which weights the span's counts (analyzer's Fact.Weight):
			// other tracestates would cost an allocation per span.
			if b, ok := r.bytes(); ok && bytes.Contains(b, thresholdKey) {
				sp.TraceState().FromRaw(d.strs.get(b))
			}
		case spanName:
			if b, ok := r.bytes(); ok {
				sp.SetName(d.strs.get(b))
			}
		case spanKind:
			sp.SetKind(ptrace.SpanKind(int32(r.varint())))
		case spanStartTimeUnixNano:
			sp.SetStartTimestamp(pcommon.Timestamp(r.fixed64()))
		case spanEndTimeUnixNano:
			sp.SetEndTimestamp(pcommon.Timestamp(r.fixed64()))
		case spanAttributes:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.attribute(b, sp.Attributes(), base, &d.spanAttrs, depthSpanKeyValue))
			}
		case spanDroppedAttributesCount, spanDroppedEventsCount, spanDroppedLinksCount:
			r.skip(protowire.VarintType)
		case spanEvents:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.events, d.limits.events, eventCost, b)) {
				r.decline(d.event(b, sp.Events()))
			}
		case spanLinks:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.links, d.limits.links, linkCost, b)) {
				r.decline(d.link(b, sp.Links()))
			}
		case spanStatus:
			if b, ok := r.bytes(); ok {
				r.decline(decodeSpanStatus(b, sp.Status()))
			}
		case spanFlags:
			r.skip(protowire.Fixed32Type)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	d.putKept(sp.Attributes(), base)
	return r.fb
}

// id16 and id8 return a trace or span id, which pdata takes empty or of its
// full size and refuses otherwise.
func (r *wireReader) id16(b []byte) (id [16]byte) {
	if len(b) != 0 && len(b) != len(id) {
		r.fb = fallbackMalformed
	}
	copy(id[:], b)
	return id
}

func (r *wireReader) id8(b []byte) (id [8]byte) {
	if len(b) != 0 && len(b) != len(id) {
		r.fb = fallbackMalformed
	}
	copy(id[:], b)
	return id
}

// event keeps an event whose name the Selection keeps, and checks any other.
func (d *lazyRequest) event(buf []byte, evs ptrace.SpanEventSlice) fallbackReason {
	// The name may come after the attributes: check (and count) first,
	// then decode.
	var name []byte
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case eventTimeUnixNano:
			r.skip(protowire.Fixed64Type)
		case eventName:
			name, _ = r.bytes() // the last one, as pdata
		case eventAttributes:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.checkKeyValue(b, 0, depthEventKeyValue))
			}
		case eventDroppedAttributesCount:
			r.skip(protowire.VarintType)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	if r.fb != fallbackNone {
		return r.fb
	}
	kept, ok := d.eventNames.get(name)
	if !ok {
		return fallbackNone
	}
	ev := evs.AppendEmpty()
	ev.SetName(kept)
	base := len(d.kept)
	r = wireReader{b: buf}
	for r.next() {
		if r.num != eventAttributes {
			r.skip(r.typ) // checked above
			continue
		}
		if b, ok := r.bytes(); ok {
			// Checked and counted above: a value not kept must not count twice.
			r.decline(d.attribute(b, ev.Attributes(), base, &d.eventAttrs, checkedAlready))
		}
	}
	d.putKept(ev.Attributes(), base)
	return r.fb
}

// link keeps a link's ids, which is all the selective decoder keeps of
// links, and checks the rest.
func (d *lazyRequest) link(buf []byte, links ptrace.SpanLinkSlice) fallbackReason {
	l := links.AppendEmpty()
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case linkTraceID:
			if b, ok := r.bytes(); ok {
				l.SetTraceID(pcommon.TraceID(r.id16(b)))
			}
		case linkSpanID:
			if b, ok := r.bytes(); ok {
				l.SetSpanID(pcommon.SpanID(r.id8(b)))
			}
		case linkTraceState:
			r.skip(protowire.BytesType)
		case linkAttributes:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.checkKeyValue(b, 0, depthEventKeyValue))
			}
		case linkDroppedAttributesCount:
			r.skip(protowire.VarintType)
		case linkFlags:
			r.skip(protowire.Fixed32Type)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

func decodeSpanStatus(buf []byte, st ptrace.Status) fallbackReason {
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case statusMessage:
			r.skip(protowire.BytesType)
		case statusCode:
			st.SetCode(ptrace.StatusCode(int32(r.varint())))
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

// keptAttr is a kept attribute as decoded, before it goes into its map: a
// map is sized once, to the attributes it gets, when all of them are known.
// EnsureCapacity of a guess (8) took a tenth of BenchmarkReceiverDecode's
// time and most of its bytes.
type keptAttr struct {
	key string
	typ pcommon.ValueType
	b   []byte // of a string or bytes value, in the request
	n   uint64 // of a bool, int or double value
}

// attribute decodes a KeyValue, counted already and at scan depth depth,
// into d.kept when keys holds its key, else checks it unless depth is
// checkedAlready. d.kept[base:] are the
// attributes kept so far for m, which holds those of earlier fields of the
// same message (a resource given twice).
func (d *lazyRequest) attribute(buf []byte, m pcommon.Map, base int, keys *stringSet, depth int) fallbackReason {
	var key, val []byte
	hasKey, hasVal := false, false
	r := wireReader{b: buf}
	for r.next() {
		switch {
		case r.num == keyValueKey && !hasKey:
			key, hasKey = r.bytes()
		case r.num == keyValueValue && !hasVal:
			val, hasVal = r.bytes()
		case r.num == keyValueKey || r.num == keyValueValue:
			r.decline(fallbackRepeatedField)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	if r.fb != fallbackNone {
		return r.fb
	}
	k, ok := keys.get(key)
	if !ok {
		if !hasVal || depth == checkedAlready {
			return fallbackNone
		}
		return d.checkAnyValue(val, 0, depth+1)
	}
	for _, a := range d.kept[base:] {
		if a.key == k {
			return fallbackDuplicateKeptAttribute
		}
	}
	if m.Len() > 0 {
		if _, dup := m.Get(k); dup {
			return fallbackDuplicateKeptAttribute
		}
	}
	a := keptAttr{key: k, typ: pcommon.ValueTypeEmpty}
	fb := fallbackNone
	if hasVal {
		fb = d.anyValue(val, &a)
	}
	d.kept = append(d.kept, a)
	return fb
}

// putKept moves d.kept[base:] into m, and truncates d.kept to base.
func (d *lazyRequest) putKept(m pcommon.Map, base int) {
	kept := d.kept[base:]
	if len(kept) == 0 {
		return
	}
	m.EnsureCapacity(m.Len() + len(kept))
	for i := range kept {
		a := &kept[i]
		switch a.typ {
		case pcommon.ValueTypeStr:
			if x, ok := d.values.get(a.b); ok {
				m.PutStr(a.key, x)
			} else {
				m.PutStr(a.key, d.strs.get(a.b))
			}
		case pcommon.ValueTypeBytes:
			m.PutEmptyBytes(a.key).FromRaw(a.b)
		case pcommon.ValueTypeBool:
			m.PutBool(a.key, a.n != 0)
		case pcommon.ValueTypeInt:
			m.PutInt(a.key, int64(a.n))
		case pcommon.ValueTypeDouble:
			m.PutDouble(a.key, math.Float64frombits(a.n))
		default:
			m.PutEmpty(a.key)
		}
	}
	d.kept = d.kept[:base]
}

// anyValue decodes a scalar AnyValue into a; arrays and maps decline.
func (d *lazyRequest) anyValue(buf []byte, a *keptAttr) fallbackReason {
	r := wireReader{b: buf}
	set := false
	for r.next() {
		if set {
			r.decline(fallbackRepeatedField) // one of the oneof only
			continue
		}
		set = true
		switch r.num {
		case anyValueStringValue:
			if b, ok := r.bytes(); ok {
				a.typ, a.b = pcommon.ValueTypeStr, b
			}
		case anyValueBytesValue:
			if b, ok := r.bytes(); ok {
				a.typ, a.b = pcommon.ValueTypeBytes, b
			}
		case anyValueBoolValue:
			a.typ, a.n = pcommon.ValueTypeBool, r.varint()
		case anyValueIntValue:
			a.typ, a.n = pcommon.ValueTypeInt, r.varint()
		case anyValueDoubleValue:
			a.typ, a.n = pcommon.ValueTypeDouble, r.fixed64()
		case anyValueArrayValue, anyValueKvlistValue:
			r.decline(fallbackKeptComplexValue)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

// checkKeyValue checks a KeyValue that is not kept, counted already, nested
// nest values deep and at scan depth depth.
func (d *lazyRequest) checkKeyValue(buf []byte, nest, depth int) fallbackReason {
	if fb := d.nested(buf, depth); fb != fallbackNone {
		return fb
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case keyValueKey:
			r.skip(protowire.BytesType)
		case keyValueValue:
			if b, ok := r.bytes(); ok {
				r.decline(d.checkAnyValue(b, nest, depth+1))
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

// checkAnyValue checks an AnyValue that is not kept, nested nest values
// deep and at scan depth depth.
func (d *lazyRequest) checkAnyValue(buf []byte, nest, depth int) fallbackReason {
	if nest > maxLazyDepth {
		return fallbackTooDeep
	}
	if fb := d.nested(buf, depth); fb != fallbackNone {
		return fb
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case anyValueStringValue, anyValueBytesValue:
			r.skip(protowire.BytesType)
		case anyValueBoolValue, anyValueIntValue:
			r.skip(protowire.VarintType)
		case anyValueDoubleValue:
			r.skip(protowire.Fixed64Type)
		case anyValueArrayValue:
			if b, ok := r.bytes(); ok {
				r.decline(d.checkArrayValue(b, nest+1, depth+1))
			}
		case anyValueKvlistValue:
			if b, ok := r.bytes(); ok {
				r.decline(d.checkKeyValueList(b, nest+1, depth+1))
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

func (d *lazyRequest) checkArrayValue(buf []byte, nest, depth int) fallbackReason {
	if fb := d.nested(buf, depth); fb != fallbackNone {
		return fb
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case arrayValueValues:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.checkAnyValue(b, nest, depth+1))
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

func (d *lazyRequest) checkKeyValueList(buf []byte, nest, depth int) fallbackReason {
	if fb := d.nested(buf, depth); fb != fallbackNone {
		return fb
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case keyValueListValues:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.checkKeyValue(b, nest, depth+1))
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}
