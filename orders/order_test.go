package orders_test

import (
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lagscope/lagscope/orders"
)

var twoItems = []orders.Item{{SKU: "sku-1", Price: 1250, Quantity: 2}, {SKU: "sku-2", Price: 99, Quantity: 1}}

func TestCreate(t *testing.T) {
	tests := []struct {
		name      string
		cmd       orders.CreateOrder
		want      orders.OrderCreated
		wantErr   error
		wantField string
	}{
		{
			name: "valid",
			cmd:  orders.CreateOrder{CustomerID: "cust-42", Items: twoItems},
			want: orders.OrderCreated{CustomerID: "cust-42", Items: twoItems, Total: 2599},
		},
		{name: "empty customer", cmd: orders.CreateOrder{Items: twoItems}, wantErr: orders.ErrInvalidCustomerID, wantField: "customer_id"},
		{name: "customer without prefix", cmd: orders.CreateOrder{CustomerID: "42", Items: twoItems}, wantErr: orders.ErrInvalidCustomerID, wantField: "customer_id"},
		{name: "customer with letters", cmd: orders.CreateOrder{CustomerID: "cust-4a", Items: twoItems}, wantErr: orders.ErrInvalidCustomerID, wantField: "customer_id"},
		{name: "no items", cmd: orders.CreateOrder{CustomerID: "cust-1"}, wantErr: orders.ErrInvalidItems, wantField: "items"},
		{name: "too many items", cmd: orders.CreateOrder{CustomerID: "cust-1", Items: make([]orders.Item, orders.MaxItems+1)}, wantErr: orders.ErrInvalidItems, wantField: "items"},
		{name: "empty sku", cmd: orders.CreateOrder{CustomerID: "cust-1", Items: []orders.Item{{Price: 1, Quantity: 1}}}, wantErr: orders.ErrInvalidSKU, wantField: "items[0].sku"},
		{name: "zero price", cmd: orders.CreateOrder{CustomerID: "cust-1", Items: []orders.Item{twoItems[0], {SKU: "a", Quantity: 1}}}, wantErr: orders.ErrInvalidPrice, wantField: "items[1].price"},
		{name: "negative price", cmd: orders.CreateOrder{CustomerID: "cust-1", Items: []orders.Item{{SKU: "a", Price: -5, Quantity: 1}}}, wantErr: orders.ErrInvalidPrice, wantField: "items[0].price"},
		{name: "price too large", cmd: orders.CreateOrder{CustomerID: "cust-1", Items: []orders.Item{{SKU: "a", Price: orders.MaxPrice + 1, Quantity: 1}}}, wantErr: orders.ErrInvalidPrice, wantField: "items[0].price"},
		{name: "zero quantity", cmd: orders.CreateOrder{CustomerID: "cust-1", Items: []orders.Item{{SKU: "a", Price: 5}}}, wantErr: orders.ErrInvalidQuantity, wantField: "items[0].quantity"},
		{name: "negative quantity", cmd: orders.CreateOrder{CustomerID: "cust-1", Items: []orders.Item{{SKU: "a", Price: 5, Quantity: -1}}}, wantErr: orders.ErrInvalidQuantity, wantField: "items[0].quantity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := orders.Create("o-1", tt.cmd)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Create() error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				var ie *orders.InvalidError
				if !errors.As(err, &ie) {
					t.Fatalf("Create() error %T is not *InvalidError", err)
				}
				if ie.Field != tt.wantField {
					t.Errorf("field = %q, want %q", ie.Field, tt.wantField)
				}
				return
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("Create() mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

// orderAt rebuilds an order that went through the given later events.
func orderAt(t *testing.T, later ...orders.Data) *orders.Order {
	t.Helper()
	now := time.Unix(1700000000, 0)
	created, err := orders.Create("o-1", orders.CreateOrder{CustomerID: "cust-7", Items: twoItems})
	if err != nil {
		t.Fatal(err)
	}
	var evs []orders.Event
	for i, d := range append([]orders.Data{created}, later...) {
		e, err := orders.NewEvent("o-1", int64(i+1), d, now)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	o, err := orders.Rebuild(evs)
	if err != nil {
		t.Fatalf("Rebuild() error = %v", err)
	}
	return o
}

var (
	paid      = orders.OrderPaid{Method: "card", Amount: 2599}
	shipped   = orders.OrderShipped{TrackingNumber: "TRK-1"}
	cancelled = orders.OrderCancelled{Reason: "changed mind"}
)

func TestCommands(t *testing.T) {
	tests := []struct {
		name    string
		history []orders.Data
		do      func(*orders.Order) (orders.Data, error)
		want    orders.Data
		wantErr error
	}{
		{name: "pay created", do: pay("card"), want: orders.OrderPaid{Method: "card", Amount: 2599}},
		{name: "pay with unknown method", do: pay("gold"), wantErr: orders.ErrInvalidMethod},
		{name: "pay with empty method", do: pay(""), wantErr: orders.ErrInvalidMethod},
		{name: "pay paid", history: []orders.Data{paid}, do: pay("card"), wantErr: orders.ErrAlreadyPaid},
		{name: "pay shipped", history: []orders.Data{paid, shipped}, do: pay("card"), wantErr: orders.ErrAlreadyPaid},
		{name: "pay cancelled", history: []orders.Data{cancelled}, do: pay("card"), wantErr: orders.ErrOrderCancelled},
		{name: "ship paid", history: []orders.Data{paid}, do: ship("TRK-9"), want: orders.OrderShipped{TrackingNumber: "TRK-9"}},
		{name: "ship unpaid", do: ship("TRK-9"), wantErr: orders.ErrNotPaid},
		{name: "ship shipped", history: []orders.Data{paid, shipped}, do: ship("TRK-9"), wantErr: orders.ErrAlreadyShipped},
		{name: "ship cancelled", history: []orders.Data{paid, cancelled}, do: ship("TRK-9"), wantErr: orders.ErrOrderCancelled},
		{name: "ship with bad tracking number", history: []orders.Data{paid}, do: ship("no spaces"), wantErr: orders.ErrInvalidTrackingNumber},
		{name: "cancel created", do: cancel("oops"), want: orders.OrderCancelled{Reason: "oops"}},
		{name: "cancel paid refunds", history: []orders.Data{paid}, do: cancel("oops"), want: orders.OrderCancelled{Reason: "oops", Refunded: 2599}},
		{name: "cancel shipped", history: []orders.Data{paid, shipped}, do: cancel("oops"), wantErr: orders.ErrAlreadyShipped},
		{name: "cancel cancelled", history: []orders.Data{cancelled}, do: cancel("oops"), wantErr: orders.ErrOrderCancelled},
		{name: "cancel without reason", do: cancel(""), wantErr: orders.ErrInvalidReason},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := orderAt(t, tt.history...)
			got, err := tt.do(o)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("event mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

func pay(m string) func(*orders.Order) (orders.Data, error) {
	return func(o *orders.Order) (orders.Data, error) { return o.Pay(orders.PayOrder{Method: m}) }
}

func ship(n string) func(*orders.Order) (orders.Data, error) {
	return func(o *orders.Order) (orders.Data, error) { return o.Ship(orders.ShipOrder{TrackingNumber: n}) }
}

func cancel(r string) func(*orders.Order) (orders.Data, error) {
	return func(o *orders.Order) (orders.Data, error) { return o.Cancel(orders.CancelOrder{Reason: r}) }
}

func TestRebuild(t *testing.T) {
	type state struct {
		Status  orders.Status
		Version int64
		Total   int64
	}
	tests := []struct {
		name    string
		history []orders.Data
		want    state
	}{
		{name: "created", want: state{orders.StatusCreated, 1, 2599}},
		{name: "paid", history: []orders.Data{paid}, want: state{orders.StatusPaid, 2, 2599}},
		{name: "shipped", history: []orders.Data{paid, shipped}, want: state{orders.StatusShipped, 3, 2599}},
		{name: "cancelled", history: []orders.Data{paid, cancelled}, want: state{orders.StatusCancelled, 3, 2599}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := orderAt(t, tt.history...)
			got := state{o.Status(), o.Version(), o.Total()}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("state mismatch (-got +want):\n%s", diff)
			}
		})
	}
}

func TestRebuildRejects(t *testing.T) {
	now := time.Now()
	created, _ := orders.NewEvent("o-1", 1, orders.OrderCreated{CustomerID: "cust-1", Items: twoItems, Total: 2599}, now)
	paidEv, _ := orders.NewEvent("o-1", 2, paid, now)
	paidV3, _ := orders.NewEvent("o-1", 3, paid, now)
	otherAgg, _ := orders.NewEvent("o-2", 2, paid, now)
	tests := []struct {
		name    string
		events  []orders.Event
		wantErr error
	}{
		{name: "empty", events: nil, wantErr: orders.ErrNotFound},
		{name: "starts without OrderCreated", events: []orders.Event{paidEv}},
		{name: "version gap", events: []orders.Event{created, paidV3}},
		{name: "other aggregate", events: []orders.Event{created, otherAgg}},
		{name: "unknown type", events: []orders.Event{created, {ID: "x", AggregateID: "o-1", Version: 2, Type: "Nope", Data: []byte("{}")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := orders.Rebuild(tt.events)
			if err == nil {
				t.Fatal("Rebuild() error = nil, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Rebuild() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := orders.NewID()
		if !re.MatchString(id) {
			t.Fatalf("NewID() = %q, not a UUID v4", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}
