package collector

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestRemoveInvalidSpans(t *testing.T) {
	tests := []struct {
		name         string
		zeroTrace    []int // indexes of spans, in a 4-span scope, given an all-zero trace id
		zeroSpan     []int // ... an all-zero span id
		wantBadTrace int
		wantBadSpan  int
		wantNames    []string
	}{
		{name: "all valid", wantNames: []string{"op-0", "op-1", "op-2", "op-3"}},
		{name: "zero trace id", zeroTrace: []int{1}, wantBadTrace: 1, wantNames: []string{"op-0", "op-2", "op-3"}},
		{name: "zero span id", zeroSpan: []int{0, 3}, wantBadSpan: 2, wantNames: []string{"op-1", "op-2"}},
		{name: "both zero counts as trace", zeroTrace: []int{2}, zeroSpan: []int{2}, wantBadTrace: 1, wantNames: []string{"op-0", "op-1", "op-3"}},
		{name: "all invalid leaves no resource", zeroTrace: []int{0, 1}, zeroSpan: []int{2, 3}, wantBadTrace: 2, wantBadSpan: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := newTraces(1, 4)
			spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
			for _, i := range tt.zeroTrace {
				spans.At(i).SetTraceID(pcommon.TraceID{})
			}
			for _, i := range tt.zeroSpan {
				spans.At(i).SetSpanID(pcommon.SpanID{})
			}
			badTrace, badSpan := removeInvalidSpans(td)
			if badTrace != tt.wantBadTrace || badSpan != tt.wantBadSpan {
				t.Errorf("removeInvalidSpans = %d, %d; want %d, %d", badTrace, badSpan, tt.wantBadTrace, tt.wantBadSpan)
			}
			if diff := cmp.Diff(spanNames(td), tt.wantNames); diff != "" {
				t.Errorf("spans left (-got +want):\n%s", diff)
			}
			if len(tt.wantNames) == 0 && td.ResourceSpans().Len() != 0 {
				t.Errorf("%d empty resource spans left, want none", td.ResourceSpans().Len())
			}
		})
	}
}

func spanNames(td ptrace.Traces) []string {
	var names []string
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				names = append(names, spans.At(k).Name())
			}
		}
	}
	return names
}

func TestRetryAfterSeconds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "1"},
		{time.Millisecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{2500 * time.Millisecond, "3"},
		{time.Minute, "60"},
	}
	for _, tt := range tests {
		if got := retryAfterSeconds(tt.d); got != tt.want {
			t.Errorf("retryAfterSeconds(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func BenchmarkRemoveInvalidSpansAllValid(b *testing.B) {
	td := newTraces(100, 5)
	b.ReportAllocs()
	for b.Loop() {
		removeInvalidSpans(td)
	}
}
