// Package spanbatch holds a decoded OTLP export request as flat slices:
// what lagscope's analysis reads of it and nothing more. The collector's
// selective decoder writes one straight from the wire, with no pdata in
// between; FromTraces makes the same of a ptrace.Traces (the decoder's
// fallbacks, trace files), and ToTraces the pdata of a Batch for the
// consumers that take pdata.
//
// A Batch is values in reused slices: decoding a request into a warm one
// allocates only the strings it keeps. The strings are ordinary Go
// strings, safe to keep; the Batch itself is its owner's, reset and reused
// after its consumer returns.
package spanbatch

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/bits"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Batch is the spans of one request, grouped as the request grouped them:
// resources, each with its scopes, each with its spans. A range [Lo, Hi)
// indexes the slice its owner names.
type Batch struct {
	Resources []Resource
	Scopes    []Scope
	Spans     []Span
	Events    []Event
	Links     []Link
	// Attributes of resources, spans and events, each owner's contiguous.
	ResourceAttrs []KeyValue
	SpanAttrs     []KeyValue
	EventAttrs    []KeyValue
}

// Range is the half-open range [Lo, Hi) of a slice of a Batch.
type Range struct{ Lo, Hi int32 }

// Len is the number of items in r.
func (r Range) Len() int { return int(r.Hi - r.Lo) }

// Resource is a resource and its scopes.
type Resource struct {
	Attrs  Range // of ResourceAttrs
	Scopes Range // of Scopes
}

// Scope is one scope's spans; the scope itself is not kept.
type Scope struct {
	Resource int32 // index in Resources
	Spans    Range // of Spans
}

// Span is what is kept of a span: its ids, name, kind, times, status
// code, the attributes and events its Filter keeps, the ids of its links
// and, when it may carry an OpenTelemetry sampling threshold (an "th:"
// part), its tracestate.
type Span struct {
	TraceID      [16]byte
	SpanID       [8]byte
	ParentSpanID [8]byte
	Name         string
	TraceState   string
	Start, End   uint64 // Unix nanoseconds
	Kind         ptrace.SpanKind
	Status       ptrace.StatusCode
	Resource     int32 // index in Resources
	Attrs        Range // of SpanAttrs
	Events       Range // of Events
	Links        Range // of Links
}

// Event is a kept span event: its name and kept attributes.
type Event struct {
	Name  string
	Attrs Range // of EventAttrs
}

// Link is the ids of a span link.
type Link struct {
	TraceID [16]byte
	SpanID  [8]byte
}

// KeyValue is an attribute.
type KeyValue struct {
	Key   string
	Value Value
}

// Value is an attribute value. Scalars are held as such, bytes as a
// string of them; a map or a slice (which the selective decoder leaves to
// pdata) only as its AsString. 32 bytes: the decoder writes one per kept
// attribute, and the batch's attributes are most of its memory.
type Value struct {
	Type pcommon.ValueType
	str  string // of a string, the bytes of bytes, AsString of a map or a slice
	num  uint64 // of a bool, int or double
}

// StrValue, IntValue, DoubleValue, BoolValue and BytesValue make values.
func StrValue(s string) Value { return Value{Type: pcommon.ValueTypeStr, str: s} }
func IntValue(n int64) Value  { return Value{Type: pcommon.ValueTypeInt, num: uint64(n)} }
func DoubleValue(d float64) Value {
	return Value{Type: pcommon.ValueTypeDouble, num: math.Float64bits(d)}
}

// BytesValue copies b.
func BytesValue(b []byte) Value { return Value{Type: pcommon.ValueTypeBytes, str: string(b)} }
func BoolValue(b bool) Value {
	v := Value{Type: pcommon.ValueTypeBool}
	if b {
		v.num = 1
	}
	return v
}

// ValueOf is v as a Value. BytesValue copies its bytes.
func ValueOf(v pcommon.Value) Value {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return StrValue(v.Str())
	case pcommon.ValueTypeInt:
		return IntValue(v.Int())
	case pcommon.ValueTypeDouble:
		return DoubleValue(v.Double())
	case pcommon.ValueTypeBool:
		return BoolValue(v.Bool())
	case pcommon.ValueTypeBytes:
		return BytesValue(v.Bytes().AsRaw())
	case pcommon.ValueTypeMap, pcommon.ValueTypeSlice:
		return Value{Type: v.Type(), str: v.AsString()}
	}
	return Value{}
}

// Str, Int, Double, Bool and Bytes return the value of that type, or its
// zero value when v is of another type (as pcommon.Value's do).
func (v Value) Str() string {
	if v.Type != pcommon.ValueTypeStr {
		return ""
	}
	return v.str
}

func (v Value) Int() int64 {
	if v.Type != pcommon.ValueTypeInt {
		return 0
	}
	return int64(v.num)
}

func (v Value) Double() float64 {
	if v.Type != pcommon.ValueTypeDouble {
		return 0
	}
	return math.Float64frombits(v.num)
}

func (v Value) Bool() bool { return v.Type == pcommon.ValueTypeBool && v.num != 0 }

// Bytes returns a copy (nil when empty, as pcommon's ByteSlice.AsRaw).
func (v Value) Bytes() []byte {
	if v.Type != pcommon.ValueTypeBytes || v.str == "" {
		return nil
	}
	return []byte(v.str)
}

// AsString is pcommon.Value.AsString of v: the string itself, or the
// value formatted as pdata formats it.
func (v Value) AsString() string {
	switch v.Type {
	case pcommon.ValueTypeStr, pcommon.ValueTypeMap, pcommon.ValueTypeSlice:
		return v.str
	case pcommon.ValueTypeEmpty:
		return ""
	}
	// Rare (numbers, booleans and bytes given where a string is
	// expected): pdata's own formatting, which the analysis matched
	// before it read batches.
	pv := pcommon.NewValueEmpty()
	v.CopyTo(pv)
	return pv.AsString()
}

// CopyTo sets dst to v.
func (v Value) CopyTo(dst pcommon.Value) {
	switch v.Type {
	case pcommon.ValueTypeStr:
		dst.SetStr(v.str)
	case pcommon.ValueTypeInt:
		dst.SetInt(int64(v.num))
	case pcommon.ValueTypeDouble:
		dst.SetDouble(math.Float64frombits(v.num))
	case pcommon.ValueTypeBool:
		dst.SetBool(v.num != 0)
	case pcommon.ValueTypeBytes:
		dst.SetEmptyBytes().FromRaw(v.Bytes())
	case pcommon.ValueTypeMap, pcommon.ValueTypeSlice:
		// Only the text of a map or a slice is kept: it becomes a string.
		dst.SetStr(v.str)
	}
}

// Reset empties b and keeps its memory.
func (b *Batch) Reset() {
	clear(b.Spans) // drop the strings for the GC
	clear(b.ResourceAttrs)
	clear(b.SpanAttrs)
	clear(b.EventAttrs)
	clear(b.Events)
	b.Resources = b.Resources[:0]
	b.Scopes = b.Scopes[:0]
	b.Spans = b.Spans[:0]
	b.Events = b.Events[:0]
	b.Links = b.Links[:0]
	b.ResourceAttrs = b.ResourceAttrs[:0]
	b.SpanAttrs = b.SpanAttrs[:0]
	b.EventAttrs = b.EventAttrs[:0]
}

// SpanCount is the number of spans in b.
func (b *Batch) SpanCount() int { return len(b.Spans) }

// Filter says what of a request a Batch keeps besides the fields of a span
// it always keeps. A nil Filter keeps everything.
type Filter interface {
	ResourceAttribute(key string) bool
	SpanAttribute(key string) bool
	EventName(name string) bool
	EventAttribute(key string) bool
}

// thresholdKey marks a tracestate that may carry an OpenTelemetry sampling
// threshold (ot=th:...), the only part of one that the analysis reads.
var thresholdKey = []byte("th:")

// KeepTraceState reports whether a span's tracestate is kept: when it may
// carry a sampling threshold.
func KeepTraceState(ts []byte) bool { return bytes.Contains(ts, thresholdKey) }

// FromTraces appends to b what f keeps of td: the same Batch the selective
// decoder makes of td's encoding with the same Filter.
func (b *Batch) FromTraces(td ptrace.Traces, f Filter) {
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		ri := int32(len(b.Resources))
		res := Resource{Attrs: b.appendAttrs(&b.ResourceAttrs, rs.Resource().Attributes(), f, Filter.ResourceAttribute)}
		res.Scopes.Lo = int32(len(b.Scopes))
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			sc := Scope{Resource: ri, Spans: Range{Lo: int32(len(b.Spans))}}
			for k := range spans.Len() {
				b.appendSpan(spans.At(k), ri, f)
			}
			sc.Spans.Hi = int32(len(b.Spans))
			b.Scopes = append(b.Scopes, sc)
		}
		res.Scopes.Hi = int32(len(b.Scopes))
		b.Resources = append(b.Resources, res)
	}
}

func (b *Batch) appendSpan(sp ptrace.Span, ri int32, f Filter) {
	s := Span{
		TraceID:      sp.TraceID(),
		SpanID:       sp.SpanID(),
		ParentSpanID: sp.ParentSpanID(),
		Name:         sp.Name(),
		Start:        uint64(sp.StartTimestamp()),
		End:          uint64(sp.EndTimestamp()),
		Kind:         sp.Kind(),
		Status:       sp.Status().Code(),
		Resource:     ri,
	}
	if ts := sp.TraceState().AsRaw(); ts != "" && KeepTraceState([]byte(ts)) {
		s.TraceState = ts
	}
	s.Attrs = b.appendAttrs(&b.SpanAttrs, sp.Attributes(), f, Filter.SpanAttribute)
	s.Events.Lo = int32(len(b.Events))
	evs := sp.Events()
	for i := range evs.Len() {
		ev := evs.At(i)
		if f != nil && !f.EventName(ev.Name()) {
			continue
		}
		b.Events = append(b.Events, Event{Name: ev.Name(), Attrs: b.appendAttrs(&b.EventAttrs, ev.Attributes(), f, Filter.EventAttribute)})
	}
	s.Events.Hi = int32(len(b.Events))
	s.Links.Lo = int32(len(b.Links))
	links := sp.Links()
	for i := range links.Len() {
		l := links.At(i)
		b.Links = append(b.Links, Link{TraceID: l.TraceID(), SpanID: l.SpanID()})
	}
	s.Links.Hi = int32(len(b.Links))
	b.Spans = append(b.Spans, s)
}

func (b *Batch) appendAttrs(dst *[]KeyValue, m pcommon.Map, f Filter, keep func(Filter, string) bool) Range {
	r := Range{Lo: int32(len(*dst))}
	for k, v := range m.All() {
		if f == nil || keep(f, k) {
			*dst = append(*dst, KeyValue{Key: k, Value: ValueOf(v)})
		}
	}
	r.Hi = int32(len(*dst))
	return r
}

// ToTraces returns the pdata of b: resources, scopes and spans as b
// groups them, with what b kept of each.
func (b *Batch) ToTraces() ptrace.Traces {
	td := ptrace.NewTraces()
	rss := td.ResourceSpans()
	rss.EnsureCapacity(len(b.Resources))
	for _, res := range b.Resources {
		rs := rss.AppendEmpty()
		putAttrs(rs.Resource().Attributes(), b.ResourceAttrs[res.Attrs.Lo:res.Attrs.Hi])
		sss := rs.ScopeSpans()
		sss.EnsureCapacity(res.Scopes.Len())
		for _, sc := range b.Scopes[res.Scopes.Lo:res.Scopes.Hi] {
			spans := sss.AppendEmpty().Spans()
			spans.EnsureCapacity(sc.Spans.Len())
			for i := sc.Spans.Lo; i < sc.Spans.Hi; i++ {
				b.putSpan(spans.AppendEmpty(), &b.Spans[i])
			}
		}
	}
	return td
}

func (b *Batch) putSpan(sp ptrace.Span, s *Span) {
	sp.SetTraceID(s.TraceID)
	sp.SetSpanID(s.SpanID)
	sp.SetParentSpanID(s.ParentSpanID)
	if s.TraceState != "" {
		sp.TraceState().FromRaw(s.TraceState)
	}
	sp.SetName(s.Name)
	sp.SetKind(s.Kind)
	sp.SetStartTimestamp(pcommon.Timestamp(s.Start))
	sp.SetEndTimestamp(pcommon.Timestamp(s.End))
	putAttrs(sp.Attributes(), b.SpanAttrs[s.Attrs.Lo:s.Attrs.Hi])
	if s.Events.Len() > 0 {
		evs := sp.Events()
		evs.EnsureCapacity(s.Events.Len())
		for _, e := range b.Events[s.Events.Lo:s.Events.Hi] {
			ev := evs.AppendEmpty()
			ev.SetName(e.Name)
			putAttrs(ev.Attributes(), b.EventAttrs[e.Attrs.Lo:e.Attrs.Hi])
		}
	}
	if s.Links.Len() > 0 {
		links := sp.Links()
		links.EnsureCapacity(s.Links.Len())
		for _, l := range b.Links[s.Links.Lo:s.Links.Hi] {
			pl := links.AppendEmpty()
			pl.SetTraceID(l.TraceID)
			pl.SetSpanID(l.SpanID)
		}
	}
	sp.Status().SetCode(s.Status)
}

// putAttrs appends kvs to m, sized once. A key given twice (which the
// selective decoder declines) keeps its last value, as pcommon.Map.Put.
func putAttrs(m pcommon.Map, kvs []KeyValue) {
	if len(kvs) == 0 {
		return
	}
	m.EnsureCapacity(m.Len() + len(kvs))
	for _, kv := range kvs {
		kv.Value.CopyTo(m.PutEmpty(kv.Key))
	}
}

// ResourceAttributes returns the attributes of r.
func (b *Batch) ResourceAttributes(r Resource) []KeyValue {
	return b.ResourceAttrs[r.Attrs.Lo:r.Attrs.Hi]
}

// SpanAttributes returns the attributes of s.
func (b *Batch) SpanAttributes(s *Span) []KeyValue { return b.SpanAttrs[s.Attrs.Lo:s.Attrs.Hi] }

// SpanEvents returns the kept events of s.
func (b *Batch) SpanEvents(s *Span) []Event { return b.Events[s.Events.Lo:s.Events.Hi] }

// EventAttributes returns the attributes of e.
func (b *Batch) EventAttributes(e Event) []KeyValue { return b.EventAttrs[e.Attrs.Lo:e.Attrs.Hi] }

// SpanLinks returns the links of s.
func (b *Batch) SpanLinks(s *Span) []Link { return b.Links[s.Links.Lo:s.Links.Hi] }

// Get returns the value of the first attribute of kvs with key k.
func Get(kvs []KeyValue, k string) (Value, bool) {
	for i := range kvs {
		if kvs[i].Key == k {
			return kvs[i].Value, true
		}
	}
	return Value{}, false
}

// Keys is a Filter that keeps the attributes and events it names.
type Keys struct {
	resource, span, eventNames, eventAttrs keySet
}

// NewKeys returns the Filter that keeps the resource attributes, span
// attributes, span events and event attributes named.
func NewKeys(resource, span, eventNames, eventAttrs []string) *Keys {
	return &Keys{resource: newKeySet(resource), span: newKeySet(span), eventNames: newKeySet(eventNames), eventAttrs: newKeySet(eventAttrs)}
}

func (k *Keys) ResourceAttribute(key string) bool { return k.resource.has(key) }
func (k *Keys) SpanAttribute(key string) bool     { return k.span.has(key) }
func (k *Keys) EventName(name string) bool        { return k.eventNames.has(name) }
func (k *Keys) EventAttribute(key string) bool    { return k.eventAttrs.has(key) }

// keySet is a set of strings: an open-addressed table at most half full,
// hashed from a string's length and its first and last 8 bytes. A lookup
// of a key it does not hold, most of a span's, mostly costs that hash and
// one empty slot; a Go map's lookups were 40 % of BenchmarkFromTraces.
type keySet struct {
	slots []string // "" is an empty slot
	mask  uint64
	empty bool // whether the set holds ""
}

func newKeySet(ss []string) keySet {
	n := 16
	for n < 2*len(ss) {
		n *= 2
	}
	s := keySet{slots: make([]string, n), mask: uint64(n - 1)}
	for _, x := range ss {
		if x == "" {
			s.empty = true
			continue
		}
		i := keyHash(x) & s.mask
		for s.slots[i] != "" && s.slots[i] != x {
			i = (i + 1) & s.mask
		}
		s.slots[i] = x
	}
	return s
}

func (s *keySet) has(k string) bool {
	if k == "" {
		return s.empty
	}
	for i := keyHash(k) & s.mask; ; i = (i + 1) & s.mask {
		switch s.slots[i] {
		case k:
			return true
		case "":
			return false
		}
	}
}

// keyHash hashes k, which is not empty: keys that differ only in their
// middle collide, which costs a probe, never a wrong answer.
func keyHash(k string) uint64 {
	var first, last uint64
	if len(k) >= 8 {
		first = binary.LittleEndian.Uint64([]byte(k[:8]))
		last = binary.LittleEndian.Uint64([]byte(k[len(k)-8:]))
	} else {
		for i := 0; i < len(k); i++ {
			first = first<<8 | uint64(k[i])
		}
	}
	h := (first ^ bits.RotateLeft64(last, 31) ^ uint64(len(k))) * 0x9e3779b97f4a7c15
	return h ^ h>>29
}
