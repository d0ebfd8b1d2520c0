package projection

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseFaults(t *testing.T) {
	tests := []struct {
		spec     string
		wantName string
		want     Faults
		wantErr  bool
	}{
		{spec: "orders_view:delay=20ms", wantName: OrdersView, want: Faults{Delay: 20 * time.Millisecond}},
		{spec: "orders_view:delay=20ms..200ms,drop=0.05", wantName: OrdersView, want: Faults{Delay: 20 * time.Millisecond, DelayMax: 200 * time.Millisecond, DropRate: 0.05}},
		{spec: "sales_summary:duplicate=1,stall-after=30s,stall-for=15s", wantName: SalesSummary, want: Faults{DuplicateRate: 1, StallAfter: 30 * time.Second, StallFor: 15 * time.Second}},
		{spec: "nope:drop=1", wantErr: true},
		{spec: "orders_view", wantErr: true},
		{spec: "orders_view:drop", wantErr: true},
		{spec: "orders_view:drop=2", wantErr: true},
		{spec: "orders_view:delay=fast", wantErr: true},
		{spec: "orders_view:speed=1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			name, got, err := ParseFaults(tt.spec)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFaults() error = %v, want error %v", err, tt.wantErr)
			}
			if name != tt.wantName {
				t.Errorf("name = %q, want %q", name, tt.wantName)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("faults (-got +want):\n%s", diff)
			}
		})
	}
}
