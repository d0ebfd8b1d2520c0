package collector

import (
	"math"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lagscope/lagscope/spanbatch"
)

// decodeTraces decodes an OTLP ExportTraceServiceRequest. With a selective
// decoder (sel non-nil) it tries that first, which makes a Batch; when it
// declines, pdata decodes the request and fb says why it declined. It
// fails exactly when pdata fails, with pdata's error. The caller frees
// what it returns.
func decodeTraces(buf []byte, sel *selectiveDecoder) (_ decodedRequest, fb fallbackReason, _ error) {
	if sel != nil {
		var b *spanbatch.Batch
		if b, fb = sel.decode(buf); fb == fallbackNone {
			return decodedRequest{batch: b}, fb, nil
		}
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(buf); err != nil {
		return decodedRequest{}, fb, err
	}
	return decodedRequest{td: req.Traces()}, fb, nil
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

// selectiveDecoder decodes what a Selection keeps of a request into a
// spanbatch.Batch and skips the rest: of each span the fields Selection
// names as always kept, the attributes and events it names: the Batch that
// spanbatch's FromTraces makes of pdata's decoding with the same Selection
// (TestLazyDifferential checks it). It checks the whole request at least as
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
// The caller returns the Batch to the pool (putBatch).
func (s *selectiveDecoder) decode(buf []byte) (*spanbatch.Batch, fallbackReason) {
	b, _, fb := s.decodeWithin(buf, unlimited, onePassBudget{bound: math.MaxInt64})
	return b, fb
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
// what budget allows. It allocates only for what it keeps (a Batch holds an
// item in less than pdata's cost of it, and a pooled one allocates only its
// strings), so that what it allocated is at most that size, and at most the
// bound. What it accepts, scanProto accepts with the same counts
// (TestLazyDifferential checks both). It returns a Batch, from the pool,
// only when it accepts.
func (s *selectiveDecoder) decodeWithin(buf []byte, l decodeLimits, budget onePassBudget) (*spanbatch.Batch, requestCounts, fallbackReason) {
	sc := getScratch()
	defer putScratch(sc)
	d := lazyRequest{
		selectiveDecoder: s, limits: l, strs: &sc.strs, batch: getBatch(),
		est: int64(len(buf)), encoded: int64(len(buf)), capacity: int64(cap(buf)),
		bound: budget.bound, perByte: budget.perByte, slack: budget.slack,
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case exportTraceServiceRequestResourceSpans:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.resources, math.MaxInt, resourceCost, b)) {
				r.decline(d.resourceSpans(b))
			}
		default:
			r.decline(fallbackUnknownField)
		}
	}
	if r.fb != fallbackNone {
		putBatch(d.batch)
		return nil, d.counts, r.fb
	}
	return d.batch, d.counts, fallbackNone
}

// overLimit is how decodeWithin declines at a limit or past its bound. It is
// no fallback, and no label of lagscope_decode_fallbacks_total: the caller
// scans the request, which refuses it or leaves it to pdata, and counts
// the fallback then.
const overLimit = numFallbackReasons

// unlimited are limits no request reaches.
var unlimited = decodeLimits{spans: math.MaxInt, links: math.MaxInt, events: math.MaxInt, attrs: math.MaxInt, depth: math.MaxInt}

// lazyRequest is the state of one request's decoding: what it counted, the
// strings it shares, and the Batch it writes.
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
	batch            *spanbatch.Batch
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

func (d *lazyRequest) resourceSpans(buf []byte) fallbackReason {
	// The resource may come after its scopes, and twice (pdata merges the
	// two): its attributes are ResourceAttrs from attrs.Lo, which nothing
	// else of the resource spans writes.
	b := d.batch
	ri := int32(len(b.Resources))
	res := spanbatch.Resource{
		Attrs:  spanbatch.Range{Lo: int32(len(b.ResourceAttrs))},
		Scopes: spanbatch.Range{Lo: int32(len(b.Scopes))},
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case resourceSpansResource:
			if m, ok := r.bytes(); ok {
				r.decline(d.resource(m, res.Attrs.Lo))
			}
		case resourceSpansScopeSpans:
			if m, ok := r.bytes(); ok && r.accept(d.count(&d.counts.scopes, math.MaxInt, scopeCost, m)) {
				r.decline(d.scopeSpans(m, ri))
			}
		case resourceSpansSchemaURL:
			r.skip(protowire.BytesType)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	res.Attrs.Hi = int32(len(b.ResourceAttrs))
	res.Scopes.Hi = int32(len(b.Scopes))
	b.Resources = append(b.Resources, res)
	return r.fb
}

// resource decodes a Resource whose attributes are ResourceAttrs from lo:
// those of an earlier Resource field of the same resource spans, then its
// own.
func (d *lazyRequest) resource(buf []byte, lo int32) fallbackReason {
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case resourceAttributes:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.attribute(b, &d.batch.ResourceAttrs, lo, &d.resourceAttrs, depthResourceKeyValue))
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

// scopeSpans decodes a ScopeSpans of resource ri. Its spans are not
// presized, as pdata's were: a pooled Batch has the room of the requests
// before, and growing it costs no write barriers for the span pointers
// pdata has.
func (d *lazyRequest) scopeSpans(buf []byte, ri int32) fallbackReason {
	sc := spanbatch.Scope{Resource: ri, Spans: spanbatch.Range{Lo: int32(len(d.batch.Spans))}}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case scopeSpansScope:
			if b, ok := r.bytes(); ok {
				r.decline(d.checkScope(b))
			}
		case scopeSpansSpans:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.spans, d.limits.spans, spanCost, b)) {
				r.decline(d.span(b, ri))
			}
		case scopeSpansSchemaURL:
			r.skip(protowire.BytesType)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	sc.Spans.Hi = int32(len(d.batch.Spans))
	d.batch.Scopes = append(d.batch.Scopes, sc)
	return r.fb
}

// span decodes a Span of resource ri. While it does, only its own
// attributes, events and links are appended to the Batch: its ranges are
// from the lengths at its start to those at its end.
func (d *lazyRequest) span(buf []byte, ri int32) fallbackReason {
	bt := d.batch
	s := spanbatch.Span{
		Resource: ri,
		Attrs:    spanbatch.Range{Lo: int32(len(bt.SpanAttrs))},
		Events:   spanbatch.Range{Lo: int32(len(bt.Events))},
		Links:    spanbatch.Range{Lo: int32(len(bt.Links))},
	}
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case spanTraceID:
			if b, ok := r.bytes(); ok {
				s.TraceID = r.id16(b)
			}
		case spanSpanID:
			if b, ok := r.bytes(); ok {
				s.SpanID = r.id8(b)
			}
		case spanParentSpanID:
			if b, ok := r.bytes(); ok {
				s.ParentSpanID = r.id8(b)
			}
		case spanTraceState:
			// Kept only when it may hold a sampling threshold (ot=th:...),
			// which weights the span's counts (analyzer's Fact.Weight):
			// other tracestates would cost an allocation per span. The
			// last one counts, as in pdata: one without a threshold after
			// one with it leaves none.
			if b, ok := r.bytes(); ok {
				s.TraceState = ""
				if spanbatch.KeepTraceState(b) {
					s.TraceState = d.strs.get(b)
				}
			}
		case spanName:
			if b, ok := r.bytes(); ok {
				s.Name = d.strs.get(b)
			}
		case spanKind:
			s.Kind = ptrace.SpanKind(int32(r.varint()))
		case spanStartTimeUnixNano:
			s.Start = r.fixed64()
		case spanEndTimeUnixNano:
			s.End = r.fixed64()
		case spanAttributes:
			if b, ok := r.bytes(); ok && r.accept(d.attr(b)) {
				r.decline(d.attribute(b, &bt.SpanAttrs, s.Attrs.Lo, &d.spanAttrs, depthSpanKeyValue))
			}
		case spanDroppedAttributesCount, spanDroppedEventsCount, spanDroppedLinksCount:
			r.skip(protowire.VarintType)
		case spanEvents:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.events, d.limits.events, eventCost, b)) {
				r.decline(d.event(b))
			}
		case spanLinks:
			if b, ok := r.bytes(); ok && r.accept(d.count(&d.counts.links, d.limits.links, linkCost, b)) {
				r.decline(d.link(b))
			}
		case spanStatus:
			if b, ok := r.bytes(); ok {
				r.decline(decodeSpanStatus(b, &s.Status))
			}
		case spanFlags:
			r.skip(protowire.Fixed32Type)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	s.Attrs.Hi = int32(len(bt.SpanAttrs))
	s.Events.Hi = int32(len(bt.Events))
	s.Links.Hi = int32(len(bt.Links))
	bt.Spans = append(bt.Spans, s)
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
func (d *lazyRequest) event(buf []byte) fallbackReason {
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
	bt := d.batch
	ev := spanbatch.Event{Name: kept, Attrs: spanbatch.Range{Lo: int32(len(bt.EventAttrs))}}
	r = wireReader{b: buf}
	for r.next() {
		if r.num != eventAttributes {
			r.skip(r.typ) // checked above
			continue
		}
		if b, ok := r.bytes(); ok {
			// Checked and counted above: a value not kept must not count twice.
			r.decline(d.attribute(b, &bt.EventAttrs, ev.Attrs.Lo, &d.eventAttrs, checkedAlready))
		}
	}
	ev.Attrs.Hi = int32(len(bt.EventAttrs))
	bt.Events = append(bt.Events, ev)
	return r.fb
}

// link keeps a link's ids, which is all the selective decoder keeps of
// links, and checks the rest.
func (d *lazyRequest) link(buf []byte) fallbackReason {
	var l spanbatch.Link
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case linkTraceID:
			if b, ok := r.bytes(); ok {
				l.TraceID = r.id16(b)
			}
		case linkSpanID:
			if b, ok := r.bytes(); ok {
				l.SpanID = r.id8(b)
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
	d.batch.Links = append(d.batch.Links, l)
	return r.fb
}

// decodeSpanStatus decodes a Status into *code. A status given twice is
// merged, as pdata merges it: a code of the first stays unless the second
// has one.
func decodeSpanStatus(buf []byte, code *ptrace.StatusCode) fallbackReason {
	r := wireReader{b: buf}
	for r.next() {
		switch r.num {
		case statusMessage:
			r.skip(protowire.BytesType)
		case statusCode:
			*code = ptrace.StatusCode(int32(r.varint()))
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return r.fb
}

// attribute decodes a KeyValue, counted already and at scan depth depth,
// and appends it to *kvs when keys holds its key, else checks it unless
// depth is checkedAlready. (*kvs)[lo:] are the attributes kept so far of
// its owner, of this message and of an earlier field of the same message
// (a resource given twice): a kept key among them declines, for pdata
// would keep both.
func (d *lazyRequest) attribute(buf []byte, kvs *[]spanbatch.KeyValue, lo int32, keys *stringSet, depth int) fallbackReason {
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
	for _, a := range (*kvs)[lo:] {
		if a.Key == k {
			return fallbackDuplicateKeptAttribute
		}
	}
	var v spanbatch.Value // empty, as pdata's of a KeyValue without a value
	if hasVal {
		var fb fallbackReason
		if v, fb = d.anyValue(val); fb != fallbackNone {
			return fb
		}
	}
	*kvs = append(*kvs, spanbatch.KeyValue{Key: k, Value: v})
	return fallbackNone
}

// anyValue decodes a scalar AnyValue; arrays and maps decline. A string
// is one of the Selection's Values or from the string cache; bytes are
// copied out of the request, which the transports reuse.
func (d *lazyRequest) anyValue(buf []byte) (spanbatch.Value, fallbackReason) {
	r := wireReader{b: buf}
	var v spanbatch.Value
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
				if x, ok := d.values.get(b); ok {
					v = spanbatch.StrValue(x)
				} else {
					v = spanbatch.StrValue(d.strs.get(b))
				}
			}
		case anyValueBytesValue:
			if b, ok := r.bytes(); ok {
				v = spanbatch.BytesValue(b) // a copy: the request is reused
			}
		case anyValueBoolValue:
			v = spanbatch.BoolValue(r.varint() != 0)
		case anyValueIntValue:
			v = spanbatch.IntValue(int64(r.varint()))
		case anyValueDoubleValue:
			v = spanbatch.DoubleValue(math.Float64frombits(r.fixed64()))
		case anyValueArrayValue, anyValueKvlistValue:
			r.decline(fallbackKeptComplexValue)
		default:
			r.decline(fallbackUnknownField)
		}
	}
	return v, r.fb
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
