package analyzer

import (
	"encoding/hex"
	"fmt"
)

// FactKind says what a Fact records.
type FactKind uint8

// The kinds of facts.
const (
	// FactAppend: an event was appended to the store (one per event, so an
	// append span writing three events gives three facts).
	FactAppend FactKind = iota + 1
	// FactProject: a projection showed an event.
	FactProject
	// FactQuery: a query read an aggregate from a read model.
	FactQuery
	// FactResolved: the projection fact of span (TraceID, SpanID) keyed by
	// producer span key Event (a FactProjectSpan) was joined, by a join
	// instance that holds that span's appends, to their events. The join
	// role of a two-stage deployment sends it to the partition of Event,
	// whose owner then does not join the fact keyed by the span
	// (server/rekey.go). The Joiner skips it.
	FactResolved
	// FactProjectSpan: a projection fact keyed by its producer span
	// (Event is KeyOfSpan of it) that the Resolver could not resolve to
	// that span's events, because it had not seen the span: given only by
	// a Resolver told to (MarkSpanKeyed), for the join role, whose
	// instance that holds the span's appends joins it to their events.
	// The Joiner skips it.
	FactProjectSpan
	// FactLearned: a join instance learned from traffic that projection
	// Projection shows events of type EventType, at Start (Unix ns); the
	// join role broadcasts it to the other instances (Joiner.Learn). The
	// Joiner's Apply skips it.
	FactLearned
)

func (k FactKind) String() string {
	switch k {
	case FactAppend:
		return "append"
	case FactProject:
		return "project"
	case FactQuery:
		return "query"
	case FactResolved:
		return "resolved"
	case FactProjectSpan:
		return "project_span"
	case FactLearned:
		return "learned"
	}
	return fmt.Sprintf("FactKind(%d)", uint8(k))
}

// EventKey identifies an event in the join: the bytes of a UUID event id, a
// 128-bit hash of any other id, or of the (trace id, span id) of a messaging
// PRODUCER span that carried no message id.
type EventKey [16]byte

// Fact is what the resolver learns from one span about one event or query:
// a plain value of exported fields, which a transport can encode as they
// are. The facts Resolver.Resolve and Resolver.Expire give own their strings
// (no reference into the request); Joiner.Apply does not keep them. Strings
// are bounded: label values to metrics.max_label_length (plus one byte, for
// the Joiner to see they were cut), ids to 64 bytes.
type Fact struct {
	Kind FactKind
	// Event is the join key of the event (append and project facts).
	Event EventKey
	// EventID is the event id as the span carried it, cut to 64 bytes
	// (ending in "…") when longer; empty when the key was derived from a
	// messaging span's ids.
	EventID       string
	EventType     string
	AggregateType string
	// AggregateID is the aggregate id as the span carried it; one longer
	// than 64 bytes is replaced by "#" and 32 hex digits of its hash.
	AggregateID string
	// Version is the aggregate version the event produced (append), the
	// projection applied (project) or the read model returned (query); 0
	// when unknown.
	Version int64
	// Command is the name of the command span that is an ancestor of the
	// append span; "none" when the trace has none (append facts).
	Command string
	// CommandStart is the command span's start (Unix ns); 0 when none.
	CommandStart int64
	// Projection names the read model (project facts).
	Projection string
	// Query names the query (query facts).
	Query string
	// TraceID and SpanID are those of the span the fact came from.
	TraceID [16]byte
	SpanID  [8]byte
	// Start and End are the span's start and end (Unix ns).
	Start, End int64
	// Weight is the adjusted count of the span the fact came from, by the
	// OpenTelemetry probability-sampling threshold in its tracestate
	// (`ot=th:...`): the number of spans it stands for, at least 1. Zero
	// when the span has no threshold (or th:0, or one that cannot be read):
	// it counts once. The Joiner counts an event (appended, projected,
	// unprojected, duplicated, out of order, late, clock skew) with its
	// append's weight and a query with its own.
	Weight float64
	// Service is the service.name of the span's resource (append and
	// project facts), for the clock-skew histogram's from_service and
	// to_service labels.
	Service string
	// LinkedTraces is a 64-bit Bloom filter (two bits per trace) of the
	// trace ids of the projection span's links; 0 when it has none. The
	// Joiner tests the append's trace id against it to tell a projection
	// linked to its event's trace from one whose context was lost
	// (linkedTo): a fixed 8 bytes however many links a batch consumer has.
	LinkedTraces uint64
}

// weight returns the number of events or queries f counts for: Weight, or
// 1 when it is 0 (or, from a hostile source, not an adjusted count).
func (f *Fact) weight() float64 {
	if f.Weight > 1 && f.Weight <= maxAdjusted {
		return f.Weight
	}
	return 1
}

// LinkBloom returns the bits of trace id t in Fact.LinkedTraces.
func LinkBloom(t [16]byte) uint64 { return linkBits(traceHash(t)) }

// traceHash is the 64-bit hash of trace id t that its link Bloom bits come
// from. The join keeps it, not the trace id, in a joined event (joined.go)
// and compares it for "same trace": equal hashes of different traces are a
// chance of 2^-64.
func traceHash(t [16]byte) uint64 { return mix64(getUint64(t[:8]) ^ mix64(getUint64(t[8:]))) }

// linkBits returns the two Bloom bits of a trace whose traceHash is h.
func linkBits(h uint64) uint64 { return 1<<(h&63) | 1<<((h>>6)&63) }

// linkedTo reports whether a span whose links give bloom may link to trace
// t: never false for a linked trace, true by chance for about one trace in
// 500 with one link (the broken-propagation count errs low, never high).
func linkedTo(bloom uint64, t [16]byte) bool { return linkedToHash(bloom, traceHash(t)) }

// linkedToHash is linkedTo for the trace whose traceHash is h.
func linkedToHash(bloom, h uint64) bool {
	b := linkBits(h)
	return bloom&b == b
}

// Clone returns f with its strings copied, safe to keep after the request
// that produced it is gone (Resolver.Resolve gives facts cloned already).
func (f Fact) Clone() Fact {
	f.EventID = clone(f.EventID)
	f.EventType = clone(f.EventType)
	f.AggregateType = clone(f.AggregateType)
	f.AggregateID = clone(f.AggregateID)
	f.Command = clone(f.Command)
	f.Projection = clone(f.Projection)
	f.Query = clone(f.Query)
	f.Service = clone(f.Service)
	return f
}

func clone(s string) string {
	if s == "" {
		return ""
	}
	return string([]byte(s))
}

// DisplayID is the id to show a person: the event id, or trace:span of the
// messaging span it was derived from.
func (f Fact) DisplayID() string {
	if f.EventID != "" {
		return f.EventID
	}
	return hex.EncodeToString(f.TraceID[:]) + ":" + hex.EncodeToString(f.SpanID[:])
}

// KeyOf returns the join key of an event id. UUIDs (the common case) keep
// their 16 bytes, so distinct UUIDs never collide; other ids are hashed to
// 128 bits with two independent FNV-1a variants.
func KeyOf(id string) EventKey {
	var k EventKey
	if parseUUID(id, &k) {
		return k
	}
	h1 := uint64(14695981039346656037)
	h2 := uint64(0x6c62272e07bb0142)
	for i := 0; i < len(id); i++ {
		c := uint64(id[i])
		h1 ^= c
		h1 *= 1099511628211
		h2 ^= c + 0x9e
		h2 *= 0x100000001b3 ^ 0x2f
	}
	putUint64(k[:8], h1)
	putUint64(k[8:], mix64(h2^uint64(len(id))))
	return k
}

// keyOfSpan returns the join key of a message identified by its producer
// span, for messaging systems that set no message id.
func keyOfSpan(trace [16]byte, span [8]byte) EventKey {
	var k EventKey
	a := mix64(getUint64(trace[:8]) ^ 0x5bd1e995)
	b := mix64(getUint64(trace[8:]) ^ getUint64(span[:]))
	putUint64(k[:8], a^mix64(getUint64(span[:])))
	putUint64(k[8:], b)
	return k
}

func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func putUint64(b []byte, v uint64) {
	_ = b[7]
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func getUint64(b []byte) uint64 {
	_ = b[7]
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// parseUUID parses the canonical 36-character form into k.
func parseUUID(s string, k *EventKey) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	var bad byte
	for j, i := range uuidHexAt {
		hi, lo := unhexTable[s[i]], unhexTable[s[i+1]]
		bad |= hi | lo
		k[j] = hi<<4 | lo
	}
	return bad < 16
}

// uuidHexAt are the positions of the 16 hex pairs of a canonical UUID.
var uuidHexAt = [16]uint8{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// unhexTable maps a hex digit to its value and any other byte to 0xff.
var unhexTable = func() (t [256]byte) {
	for c := range t {
		t[c] = 0xff
		if v, ok := unhex(byte(c)); ok {
			t[c] = v
		}
	}
	return t
}()

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
