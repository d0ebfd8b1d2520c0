package collector

import (
	"encoding/json"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// A request is scanned before it is decoded, so that what decoding would
// allocate is known (and refused past the limits) before pdata allocates it:
// an 8.7 KB gzip body holding a million empty links decodes into hundreds of
// MiB. The scans count what pdata makes one object of (resources, scopes,
// spans, events, links, attributes) and measure nesting; they do not check
// the request otherwise: malformed input is left to pdata to refuse, so that
// a request fails exactly when pdata fails, with pdata's error.

// decodeLimits are the per-request limits of Config, checked by the scans.
type decodeLimits struct {
	spans, links, events, attrs, depth int
}

func (c Config) decodeLimits() decodeLimits {
	return decodeLimits{
		spans:  c.MaxSpansPerRequest,
		links:  c.MaxLinksPerRequest,
		events: c.MaxEventsPerRequest,
		attrs:  c.MaxAttributesPerRequest,
		depth:  c.MaxJSONDepth,
	}
}

// requestCounts is what a scan found in a request.
type requestCounts struct {
	resources, scopes, spans, events, links int
	// attrs counts key-values of resources, scopes, spans, events and links,
	// the elements of array and key-value-list values nested in them, and
	// entity references with their keys: everything pdata allocates per item
	// below a span that is not an event or a link.
	attrs int
}

// Bytes that pdata allocates per decoded item, garbage from growing slices
// included: measured with runtime.MemStats.TotalAlloc decoding 200k empty
// items of each kind, protobuf and JSON (the larger, rounded up); an
// attribute is charged as a key-value holding a string, the dearest of the
// kinds it counts. Strings and ids cost at most the request's own bytes on
// top (decodedSize).
const (
	resourceCost  = 184
	scopeCost     = 168
	spanCost      = 264
	eventCost     = 112
	linkCost      = 128
	attributeCost = 264
)

// decodedSize estimates, from above, the bytes that decoding a request of
// encoded bytes holding c allocates.
func (c requestCounts) decodedSize(encoded int) int64 {
	return int64(encoded) +
		int64(c.resources)*resourceCost + int64(c.scopes)*scopeCost + int64(c.spans)*spanCost +
		int64(c.events)*eventCost + int64(c.links)*linkCost + int64(c.attrs)*attributeCost
}

// check returns the error of the first limit c exceeds, or nil.
func (c *requestCounts) check(l decodeLimits) *requestError {
	switch {
	case c.spans > l.spans:
		return limitExceeded("spans", l.spans, "otlp.max_spans_per_request")
	case c.links > l.links:
		return limitExceeded("links", l.links, "otlp.max_links_per_request")
	case c.events > l.events:
		return limitExceeded("events", l.events, "otlp.max_events_per_request")
	case c.attrs > l.attrs:
		return limitExceeded("attributes", l.attrs, "otlp.max_attributes_per_request")
	}
	return nil
}

func limitExceeded(what string, limit int, key string) *requestError {
	return newRequestError(reasonTooLarge, "request has more than "+strconv.Itoa(limit)+" "+what+" ("+key+")")
}

func tooDeep(limit int) *requestError {
	return newRequestError(reasonTooLarge, "request nests deeper than "+strconv.Itoa(limit)+" levels (otlp.max_json_depth)")
}

// Field numbers of opentelemetry-proto's collector/trace/v1/trace_service.proto,
// trace/v1/trace.proto, resource/v1/resource.proto and common/v1/common.proto
// that hold what the scan counts or descends into.
const (
	exportTraceServiceRequestResourceSpans = 1 // repeated ResourceSpans resource_spans = 1

	resourceSpansResource   = 1 // Resource resource = 1
	resourceSpansScopeSpans = 2 // repeated ScopeSpans scope_spans = 2

	resourceAttributes = 1 // repeated KeyValue attributes = 1
	resourceEntityRefs = 3 // repeated EntityRef entity_refs = 3

	entityRefIDKeys          = 3 // repeated string id_keys = 3
	entityRefDescriptionKeys = 4 // repeated string description_keys = 4

	scopeSpansScope = 1 // InstrumentationScope scope = 1
	scopeSpansSpans = 2 // repeated Span spans = 2

	instrumentationScopeAttributes = 3 // repeated KeyValue attributes = 3

	spanAttributes = 9  // repeated KeyValue attributes = 9
	spanEvents     = 11 // repeated Event events = 11
	spanLinks      = 13 // repeated Link links = 13

	eventAttributes = 3 // Span.Event: repeated KeyValue attributes = 3
	linkAttributes  = 4 // Span.Link: repeated KeyValue attributes = 4

	keyValueValue = 2 // AnyValue value = 2

	anyValueArrayValue  = 5 // ArrayValue array_value = 5
	anyValueKvlistValue = 6 // KeyValueList kvlist_value = 6

	arrayValueValues   = 1 // ArrayValue: repeated AnyValue values = 1
	keyValueListValues = 1 // KeyValueList: repeated KeyValue values = 1
)

// protoMsg names the messages protoScanner descends into.
type protoMsg uint8

const (
	msgRequest protoMsg = iota
	msgResourceSpans
	msgResource
	msgEntityRef
	msgScopeSpans
	msgScope
	msgSpan
	msgEvent
	msgLink
	msgKeyValue
	msgAnyValue
	msgArrayValue
	msgKeyValueList
)

// protoScanner counts the items of an encoded ExportTraceServiceRequest.
type protoScanner struct {
	limits decodeLimits
	counts requestCounts
}

// scanProto counts the items of an encoded ExportTraceServiceRequest and
// refuses it as too large past a limit. It reads the wire format with
// protowire, without allocating.
func scanProto(b []byte, l decodeLimits) (requestCounts, *requestError) {
	s := protoScanner{limits: l}
	err := s.scan(b, msgRequest, 0)
	return s.counts, err
}

// child returns the message that field num of a message m holds, and
// whether it is one the scan counts or descends into.
func child(m protoMsg, num protowire.Number) (protoMsg, bool) {
	switch m {
	case msgRequest:
		return msgResourceSpans, num == exportTraceServiceRequestResourceSpans
	case msgResourceSpans:
		switch num {
		case resourceSpansResource:
			return msgResource, true
		case resourceSpansScopeSpans:
			return msgScopeSpans, true
		}
	case msgResource:
		switch num {
		case resourceAttributes:
			return msgKeyValue, true
		case resourceEntityRefs:
			return msgEntityRef, true
		}
	case msgScopeSpans:
		switch num {
		case scopeSpansScope:
			return msgScope, true
		case scopeSpansSpans:
			return msgSpan, true
		}
	case msgScope:
		return msgKeyValue, num == instrumentationScopeAttributes
	case msgSpan:
		switch num {
		case spanAttributes:
			return msgKeyValue, true
		case spanEvents:
			return msgEvent, true
		case spanLinks:
			return msgLink, true
		}
	case msgEvent:
		return msgKeyValue, num == eventAttributes
	case msgLink:
		return msgKeyValue, num == linkAttributes
	case msgKeyValue:
		return msgAnyValue, num == keyValueValue
	case msgAnyValue:
		switch num {
		case anyValueArrayValue:
			return msgArrayValue, true
		case anyValueKvlistValue:
			return msgKeyValueList, true
		}
	case msgArrayValue:
		return msgAnyValue, num == arrayValueValues
	case msgKeyValueList:
		return msgKeyValue, num == keyValueListValues
	}
	return 0, false
}

// count adds one item of a message of kind m as pdata allocates it, and
// checks the limit it counts against.
func (s *protoScanner) count(parent, m protoMsg) *requestError {
	c := &s.counts
	switch m {
	case msgResourceSpans:
		c.resources++
	case msgScopeSpans:
		c.scopes++
	case msgSpan:
		c.spans++
	case msgEvent:
		c.events++
	case msgLink:
		c.links++
	case msgKeyValue, msgEntityRef:
		c.attrs++
	case msgAnyValue:
		if parent == msgArrayValue { // a KeyValue's own value is counted with it
			c.attrs++
		}
	default:
		return nil
	}
	return c.check(s.limits)
}

// scan counts the fields of message b of kind m at nesting depth. It stops
// without error at the first malformed field: pdata refuses the request
// there, having allocated at most what was counted before it.
func (s *protoScanner) scan(b []byte, m protoMsg, depth int) *requestError {
	if depth > s.limits.depth {
		return tooDeep(s.limits.depth)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil
			}
			b = b[n:]
			if m == msgEntityRef && (num == entityRefIDKeys || num == entityRefDescriptionKeys) {
				s.counts.attrs++
				if err := s.counts.check(s.limits); err != nil {
					return err
				}
				continue
			}
			if c, ok := child(m, num); ok {
				if err := s.count(m, c); err != nil {
					return err
				}
				if err := s.scan(v, c, depth+1); err != nil {
					return err
				}
			}
			continue
		}
		// Any other field pdata keeps is a scalar, and one of the wrong wire
		// type fails pdata's decoding: skipping it is at least as lenient.
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil
		}
		b = b[n:]
	}
	return nil
}

// jsonItem is what the elements of an OTLP/JSON array are, by the key that
// holds the array.
type jsonItem uint8

const (
	jsonOther jsonItem = iota // not counted: pdata skips it or allocates nothing per element
	jsonResource
	jsonScope
	jsonSpan
	jsonEvent
	jsonLink
	jsonAttribute
)

// jsonItemOf classifies an array by its key, in both spellings that pdata's
// JSON decoder accepts. Keys are matched wherever they appear, including in
// objects pdata skips: counting too much is safe.
func jsonItemOf(key []byte) jsonItem {
	switch string(key) {
	case "resourceSpans", "resource_spans":
		return jsonResource
	case "scopeSpans", "scope_spans":
		return jsonScope
	case "spans":
		return jsonSpan
	case "events":
		return jsonEvent
	case "links":
		return jsonLink
	case "attributes", "values", "entityRefs", "entity_refs", "idKeys", "id_keys", "descriptionKeys", "description_keys":
		return jsonAttribute
	}
	return jsonOther
}

// jsonLevel is one open object or array of jsonScanner.
type jsonLevel struct {
	array bool
	item  jsonItem // for an array: what its elements are
}

// scanJSON counts the items of an OTLP/JSON ExportTraceServiceRequest and
// measures its nesting, refusing it as too large past a limit. It reads
// bytes, tracking only strings, brackets and keys; it does not validate the
// JSON (pdata does) and allocates only to unescape a key that has escapes.
func scanJSON(b []byte, l decodeLimits) (requestCounts, *requestError) {
	var c requestCounts
	stack := make([]jsonLevel, 0, 16)
	var key []byte      // the last string read, quotes included: the key of a value that follows
	keyEscaped := false // key holds escapes, to undo before it is classified
	valueStart := false // in an array, the next value is a new element
	for i := 0; i < len(b); i++ {
		ch := b[i]
		switch ch {
		case ' ', '\t', '\n', '\r', ':':
			continue
		case ',':
			if n := len(stack); n > 0 && stack[n-1].array {
				valueStart = true
			}
			continue
		case ']', '}':
			if n := len(stack); n > 0 {
				stack = stack[:n-1]
			}
			valueStart = false
			continue
		}
		// A value (or, in an object, a key) starts at i.
		if n := len(stack); n > 0 && stack[n-1].array && valueStart {
			valueStart = false
			switch stack[n-1].item {
			case jsonResource:
				c.resources++
			case jsonScope:
				c.scopes++
			case jsonSpan:
				c.spans++
			case jsonEvent:
				c.events++
			case jsonLink:
				c.links++
			case jsonAttribute:
				c.attrs++
			}
			if err := c.check(l); err != nil {
				return c, err
			}
		}
		switch ch {
		case '{', '[':
			if len(stack) >= l.depth {
				return c, tooDeep(l.depth)
			}
			lv := jsonLevel{array: ch == '['}
			if lv.array && len(key) >= 2 {
				k := key[1 : len(key)-1]
				if keyEscaped {
					var s string
					if json.Unmarshal(key, &s) == nil {
						k = []byte(s)
					}
				}
				lv.item = jsonItemOf(k)
			}
			if lv.array {
				valueStart = true
			}
			stack = append(stack, lv)
			key = nil
		case '"':
			end := i + 1
			escaped := false
			for end < len(b) && b[end] != '"' {
				if b[end] == '\\' {
					escaped = true
					end++
				}
				end++
			}
			if end >= len(b) {
				return c, nil // unterminated: pdata refuses it
			}
			key, keyEscaped = b[i:end+1], escaped
			i = end
		default:
			key = nil // numbers and literals
		}
	}
	return c, nil
}
