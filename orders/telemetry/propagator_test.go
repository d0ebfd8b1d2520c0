package telemetry_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/orders/telemetry"
)

// TestPropagatorsFromEnv: OTEL_PROPAGATORS chooses the keys the trace
// context is written under, and every choice reads back what it wrote.
func TestPropagatorsFromEnv(t *testing.T) {
	tests := []struct {
		env     string
		want    []string // keys Inject writes for a sampled span context
		wantErr bool
	}{
		{env: "", want: []string{"traceparent"}},
		{env: "tracecontext", want: []string{"traceparent"}},
		{env: "b3", want: []string{"b3"}},
		{env: "b3multi", want: []string{"x-b3-sampled", "x-b3-spanid", "x-b3-traceid"}},
		{env: " b3multi , tracecontext,baggage", want: []string{"traceparent", "x-b3-sampled", "x-b3-spanid", "x-b3-traceid"}},
		{env: "zipkin-please", wantErr: true},
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(telemetry.EnvPropagators, tc.env)
			t.Cleanup(func() { _ = telemetry.UsePropagatorsFromEnv() }) // after the env is restored
			err := telemetry.UsePropagatorsFromEnv()
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error for an unknown propagator")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			md := map[string]string{}
			telemetry.Inject(ctx, md)
			if diff := cmp.Diff(tc.want, slices.Sorted(maps.Keys(md))); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
			got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), md))
			if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsSampled() {
				t.Errorf("extracted %v, want %v", got, sc)
			}
		})
	}
}
