package collector

import (
	"bytes"
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
//
// The selective decoder counts the same items as it decodes, within a
// reservation made before it starts (decodeOnePass), and leaves a request
// that passes a limit or the reservation to scanProto, which decides: the
// scan runs for those, for the requests the decoder declines, and for JSON.

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
	c, l := &s.counts, &s.limits
	switch m {
	case msgResourceSpans:
		c.resources++
	case msgScopeSpans:
		c.scopes++
	case msgSpan:
		if c.spans++; c.spans > l.spans {
			return c.check(*l)
		}
	case msgEvent:
		if c.events++; c.events > l.events {
			return c.check(*l)
		}
	case msgLink:
		if c.links++; c.links > l.links {
			return c.check(*l)
		}
	case msgKeyValue, msgEntityRef:
		if c.attrs++; c.attrs > l.attrs {
			return c.check(*l)
		}
	case msgAnyValue:
		// A KeyValue's own value is counted with it.
		if parent == msgArrayValue {
			if c.attrs++; c.attrs > l.attrs {
				return c.check(*l)
			}
		}
	}
	return nil
}

// childTable is child as a table for field numbers under 16, which all
// the fields it names are: 0 is no child, else the child's kind + 1.
var childTable = func() (t [msgKeyValueList + 1][16]protoMsg) {
	for m := range t {
		for num := range t[m] {
			if c, ok := child(protoMsg(m), protowire.Number(num)); ok {
				t[m][num] = c + 1
			}
		}
	}
	return t
}()

// scan counts the fields of message b of kind m at nesting depth. It stops
// without error at the first malformed field: pdata refuses the request
// there, having allocated at most what was counted before it.
//
// One-byte tags and lengths are decoded inline, the rest with protowire,
// and children are looked up in childTable: that took the scan of a synth
// request from 175 to 80 µs (BenchmarkDecodeScan/proto/scan; pdata takes
// 485 µs to decode it).
func (s *protoScanner) scan(b []byte, m protoMsg, depth int) *requestError {
	if depth > s.limits.depth {
		return tooDeep(s.limits.depth)
	}
	for len(b) > 0 {
		var num protowire.Number
		var typ protowire.Type
		if t := b[0]; t < 0x80 && t >= 1<<3 {
			num, typ, b = protowire.Number(t>>3), protowire.Type(t&7), b[1:]
		} else {
			var n int
			if num, typ, n = protowire.ConsumeTag(b); n < 0 {
				return nil
			}
			b = b[n:]
		}
		if typ != protowire.BytesType {
			// Any other field pdata keeps is a scalar, and one of the wrong
			// wire type fails pdata's decoding: skipping it is at least as
			// lenient.
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil
			}
			b = b[n:]
			continue
		}
		var v []byte
		if len(b) > 0 && b[0] < 0x80 {
			n := int(b[0])
			if n >= len(b) {
				return nil
			}
			v, b = b[1:1+n], b[1+n:]
		} else {
			var n int
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				return nil
			}
			b = b[n:]
		}
		var c protoMsg
		if num < 16 {
			c = childTable[m][num]
		}
		if c == 0 {
			if m == msgEntityRef && (num == entityRefIDKeys || num == entityRefDescriptionKeys) {
				if s.counts.attrs++; s.counts.attrs > s.limits.attrs {
					return s.counts.check(s.limits)
				}
			}
			continue
		}
		c--
		if err := s.count(m, c); err != nil {
			return err
		}
		if len(v) == 0 {
			continue // an empty message: nothing to descend into
		}
		if err := s.scan(v, c, depth+1); err != nil {
			return err
		}
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
				if bytes.IndexByte(k, '\\') >= 0 {
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
			// The closing quote is the first not escaped by an odd number
			// of backslashes; IndexByte finds candidates fast.
			end := i
			for {
				k := bytes.IndexByte(b[end+1:], '"')
				if k < 0 {
					return c, nil // unterminated: pdata refuses it
				}
				end += 1 + k
				backslashes := 0
				for p := end - 1; p > i && b[p] == '\\'; p-- {
					backslashes++
				}
				if backslashes%2 == 0 {
					break
				}
			}
			key = b[i : end+1]
			i = end
		default:
			key = nil // numbers and literals
		}
	}
	return c, nil
}
