package collector

import (
	"sync"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// decodedRequest is a decoded export request: the Batch the selective
// decoder made of it, or pdata's decoding (OTLP/JSON, the requests the
// selective decoder declines, Zipkin, a receiver without LazyDecode).
type decodedRequest struct {
	batch *spanbatch.Batch // nil when pdata decoded the request
	td    ptrace.Traces    // when batch is nil
}

// spanCount is the number of spans of r.
func (r decodedRequest) spanCount() int {
	if r.batch != nil {
		return r.batch.SpanCount()
	}
	return r.td.SpanCount()
}

// removeInvalidSpans removes the spans of r with an all-zero trace or span
// id, as the function of that name does of pdata.
func (r decodedRequest) removeInvalidSpans() (badTrace, badSpan int) {
	if r.batch != nil {
		return removeInvalidBatchSpans(r.batch)
	}
	return removeInvalidSpans(r.td)
}

// free returns r's Batch, if it has one, to the pool: once, when neither
// the receiver nor the consumer reads r any more.
func (r decodedRequest) free() {
	if r.batch != nil {
		putBatch(r.batch)
	}
}

// batches holds the Batches of the requests decoded, reset: a warm one
// allocates only the strings a request keeps.
var batches = sync.Pool{New: func() any { return new(spanbatch.Batch) }}

// A Batch that grew past these bounds (a request of more spans than the
// limits' defaults admit in the in-flight budget, nearly) is left to the
// GC rather than pooled, so that what the pool holds per Batch stays under
// about 32 MiB: 7.5 MiB of spans, 18 MiB of attributes, 6 MiB of events
// and links. A Collector's batch (8192 spans, some tens of thousands of
// kept attributes) stays well under them.
const (
	maxPooledSpans      = 64 << 10 // and as many resources and scopes
	maxPooledAttributes = 256 << 10
	maxPooledEvents     = 256 << 10 // and links
)

func getBatch() *spanbatch.Batch { return batches.Get().(*spanbatch.Batch) }

// putBatch resets b and returns it to the pool, unless it grew past the
// bounds.
func putBatch(b *spanbatch.Batch) {
	if cap(b.Spans) > maxPooledSpans || cap(b.Resources)+cap(b.Scopes) > maxPooledSpans ||
		cap(b.ResourceAttrs)+cap(b.SpanAttrs)+cap(b.EventAttrs) > maxPooledAttributes ||
		cap(b.Events)+cap(b.Links) > maxPooledEvents {
		return
	}
	b.Reset()
	batches.Put(b)
}

// removeInvalidBatchSpans is removeInvalidSpans of a Batch: it removes the
// spans whose trace or span id is all zeros, then the scopes and resources
// with no span left, and returns how many spans it removed for each cause,
// a span with both ids zero counting as a bad trace id. What is left is
// the Batch that FromTraces makes of the pdata removeInvalidSpans leaves
// (TestRemoveInvalidBatchSpans): everything of a removed span, scope or
// resource is gone, the rest moved down in order.
//
// It compacts b in place, which needs b's items in the order of its
// resources, scopes and spans, each owner's contiguous: as the selective
// decoder and FromTraces append them. Every write is then at or before
// the read of the same slice.
func removeInvalidBatchSpans(b *spanbatch.Batch) (badTrace, badSpan int) {
	if !hasInvalidBatchSpan(b) {
		return 0, 0 // the usual case: nothing rewritten
	}
	var nRes, nScopes, nSpans, nEvents, nLinks, nResAttrs, nSpanAttrs, nEventAttrs int32
	for _, res := range b.Resources {
		ri := nRes
		scopesLo := nScopes
		for _, sc := range b.Scopes[res.Scopes.Lo:res.Scopes.Hi] {
			spansLo := nSpans
			for _, s := range b.Spans[sc.Spans.Lo:sc.Spans.Hi] {
				switch {
				case s.TraceID == [16]byte{}:
					badTrace++
					continue
				case s.SpanID == [8]byte{}:
					badSpan++
					continue
				}
				s.Resource = ri
				s.Attrs = moveDown(b.SpanAttrs, s.Attrs, &nSpanAttrs)
				eventsLo := nEvents
				for _, e := range b.Events[s.Events.Lo:s.Events.Hi] {
					e.Attrs = moveDown(b.EventAttrs, e.Attrs, &nEventAttrs)
					b.Events[nEvents] = e
					nEvents++
				}
				s.Events = spanbatch.Range{Lo: eventsLo, Hi: nEvents}
				s.Links = moveDown(b.Links, s.Links, &nLinks)
				b.Spans[nSpans] = s
				nSpans++
			}
			if nSpans > spansLo {
				b.Scopes[nScopes] = spanbatch.Scope{Resource: ri, Spans: spanbatch.Range{Lo: spansLo, Hi: nSpans}}
				nScopes++
			}
		}
		if nScopes > scopesLo {
			b.Resources[nRes] = spanbatch.Resource{
				Attrs:  moveDown(b.ResourceAttrs, res.Attrs, &nResAttrs),
				Scopes: spanbatch.Range{Lo: scopesLo, Hi: nScopes},
			}
			nRes++
		}
	}
	b.Resources = b.Resources[:nRes]
	b.Scopes = b.Scopes[:nScopes]
	b.Links = b.Links[:nLinks]
	b.Spans = truncate(b.Spans, nSpans)
	b.Events = truncate(b.Events, nEvents)
	b.ResourceAttrs = truncate(b.ResourceAttrs, nResAttrs)
	b.SpanAttrs = truncate(b.SpanAttrs, nSpanAttrs)
	b.EventAttrs = truncate(b.EventAttrs, nEventAttrs)
	return badTrace, badSpan
}

func hasInvalidBatchSpan(b *spanbatch.Batch) bool {
	for i := range b.Spans {
		if s := &b.Spans[i]; s.TraceID == [16]byte{} || s.SpanID == [8]byte{} {
			return true
		}
	}
	return false
}

// moveDown moves the items r of s to s[*n:], which is at or before r, and
// returns their new range, which *n ends.
func moveDown[T any](s []T, r spanbatch.Range, n *int32) spanbatch.Range {
	lo := *n
	*n += int32(copy(s[lo:], s[r.Lo:r.Hi]))
	return spanbatch.Range{Lo: lo, Hi: *n}
}

// truncate is s[:n], with the strings past n dropped for the GC (Reset
// clears only up to the length).
func truncate[T any](s []T, n int32) []T {
	clear(s[n:])
	return s[:n]
}
