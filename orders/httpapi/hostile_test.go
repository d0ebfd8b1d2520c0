package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/httpapi"
)

// send makes a request whose path (and query) is sent as given, and returns
// the status and the "field" of a JSON error body, if any.
func (f *fixture) send(t *testing.T, method, pathAndQuery, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+pathAndQuery, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Field string `json:"field"`
	}
	_ = json.Unmarshal(b, &out) // net/http's own errors are not JSON
	return resp.StatusCode, out.Field
}

// jsonString encodes s as a JSON string, but keeps invalid UTF-8 as the raw
// bytes a hostile client would send (json.Marshal replaces them).
func jsonString(s string) string {
	if !utf8.ValidString(s) {
		return `"` + s + `"`
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// hostileIDs are ids that must never get past the edge: each is refused
// with 400 naming the field.
var hostileIDs = map[string]string{
	"quote":           `'`,
	"double quote":    `"`,
	"sql injection":   `'; DROP TABLE events; --`,
	"sql tautology":   `x' OR '1'='1`,
	"NUL":             "a\x00b",
	"invalid UTF-8":   "\xff\xfe",
	"newline":         "a\nb",
	"slash":           "a/b",
	"space":           "a b",
	"non-ASCII":       "café",
	"65 bytes":        strings.Repeat("a", 65),
	"10 KB":           strings.Repeat("x", 10_000),
	"percent-encoded": "%27",
}

// storeState is what the hostile requests must leave as it was.
type storeState struct {
	Head   int64
	Events []orders.Event
}

func (f *fixture) state(t *testing.T, id string) storeState {
	t.Helper()
	ctx := context.Background()
	head, err := f.db.Head(ctx)
	if err != nil {
		t.Fatalf("store head: %v", err)
	}
	evs, err := f.db.Load(ctx, id)
	if err != nil {
		t.Fatalf("load %s: %v", id, err)
	}
	return storeState{Head: head, Events: evs}
}

func TestHostileInputIsRefused(t *testing.T) {
	f := newFixture(t)
	id := f.create(t)
	f.waitProjected(t, id, 1)
	before := f.state(t, id)

	for name, hostile := range hostileIDs {
		path := "/orders/" + url.PathEscape(hostile)
		body := func(field string) string {
			return `{"customer_id":` + jsonString(field) + `,"items":[{"sku":"a","price":1,"quantity":1}]}`
		}
		// A body that is not UTF-8 is refused as a whole, before any field.
		wantBodyField := "customer_id"
		if !utf8.ValidString(hostile) {
			wantBodyField = ""
		}
		tests := []struct {
			route, method, path, body string
			wantField                 string
		}{
			{"get", "GET", path, "", "id"},
			{"pay", "POST", path + "/pay", `{"method":"card"}`, "id"},
			{"ship", "POST", path + "/ship", `{"tracking_number":"TRK-1"}`, "id"},
			{"cancel", "POST", path + "/cancel", `{"reason":"r"}`, "id"},
			{"list", "GET", "/orders?customer_id=" + url.QueryEscape(hostile), "", "customer_id"},
			{"create", "POST", "/orders", body(hostile), wantBodyField},
		}
		for _, tt := range tests {
			t.Run(name+"/"+tt.route, func(t *testing.T) {
				code, field := f.send(t, tt.method, tt.path, tt.body)
				if code != http.StatusBadRequest || field != tt.wantField {
					t.Errorf("%s %q = %d field %q, want 400 field %q", tt.method, tt.path, code, field, tt.wantField)
				}
			})
		}
	}

	huge := strings.Repeat("x", 1<<20)
	fields := []struct {
		name, method, path, body string
		wantCode                 int
		wantField                string
	}{
		// Within net/http's 1 MiB (and 4 KiB) bound on request headers.
		{"1 MiB id", "GET", "/orders/" + huge, "", http.StatusBadRequest, "id"},
		{"1 MiB customer_id in the query", "GET", "/orders?customer_id=" + huge, "", http.StatusBadRequest, "customer_id"},
		{"1 MiB customer_id", "POST", "/orders", `{"customer_id":"` + huge + `","items":[]}`, http.StatusRequestEntityTooLarge, ""},
		{"1 MiB reason", "POST", "/orders/" + id + "/cancel", `{"reason":"` + huge + `"}`, http.StatusRequestEntityTooLarge, ""},
		{"body just over the limit", "POST", "/orders/" + id + "/cancel",
			`{"reason":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `"}`, http.StatusRequestEntityTooLarge, ""},
		{"reason over MaxTextBytes", "POST", "/orders/" + id + "/cancel",
			`{"reason":"` + strings.Repeat("x", httpapi.MaxTextBytes+1) + `"}`, http.StatusBadRequest, "reason"},
		{"NUL in reason", "POST", "/orders/" + id + "/cancel", `{"reason":"a\u0000b"}`, http.StatusBadRequest, "reason"},
		{"invalid UTF-8 in reason", "POST", "/orders/" + id + "/cancel", "{\"reason\":\"\xff\"}", http.StatusBadRequest, ""},
		{"NUL in method", "POST", "/orders/" + id + "/pay", `{"method":"card\u0000"}`, http.StatusBadRequest, "method"},
		{"escape in tracking number", "POST", "/orders/" + id + "/ship", `{"tracking_number":"\u001b[2J"}`, http.StatusBadRequest, "tracking_number"},
		{"NUL in sku", "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"\u0000","price":1,"quantity":1}]}`, http.StatusBadRequest, "items[0].sku"},
		{"unknown field", "POST", "/orders/" + id + "/pay", `{"method":"card","amount":1}`, http.StatusBadRequest, "amount"},
		{"two values", "POST", "/orders/" + id + "/pay", `{"method":"card"}{"method":"card"}`, http.StatusBadRequest, ""},
		{"zero quantity", "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":1,"quantity":0}]}`, http.StatusBadRequest, "items[0].quantity"},
		{"quantity over the maximum", "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":1,"quantity":10001}]}`, http.StatusBadRequest, "items[0].quantity"},
		{"quantity past int64", "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":1,"quantity":9223372036854775808}]}`, http.StatusBadRequest, "items.quantity"},
		{"negative price", "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":-1,"quantity":1}]}`, http.StatusBadRequest, "items[0].price"},
		{"price over the maximum", "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":1000000001,"quantity":1}]}`, http.StatusBadRequest, "items[0].price"},
		{"price as a string", "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":"1","quantity":1}]}`, http.StatusBadRequest, "items.price"},
		{"too many items", "POST", "/orders", `{"customer_id":"cust-1","items":[` +
			strings.TrimSuffix(strings.Repeat(`{"sku":"a","price":1,"quantity":1},`, orders.MaxItems+1), ",") + `]}`, http.StatusBadRequest, "items"},
		{"limit past int", "GET", "/orders?customer_id=cust-1&limit=99999999999999999999", "", http.StatusBadRequest, "limit"},
	}
	for _, tt := range fields {
		t.Run(tt.name, func(t *testing.T) {
			code, field := f.send(t, tt.method, tt.path, tt.body)
			if code != tt.wantCode || field != tt.wantField {
				t.Errorf("%s = %d field %q, want %d field %q", tt.name, code, field, tt.wantCode, tt.wantField)
			}
		})
	}

	if diff := cmp.Diff(f.state(t, id), before); diff != "" {
		t.Errorf("store after hostile requests (-got +want):\n%s", diff)
	}
	if code, _ := f.send(t, "GET", "/orders/summary", ""); code != http.StatusOK {
		t.Errorf("GET /orders/summary after hostile requests = %d, want 200", code)
	}
}

// TestSQLLookingTextIsStoredAsIs sends free text that is valid input and
// looks like SQL: parameterised queries store it as it is, and the store
// is otherwise unchanged.
func TestSQLLookingTextIsStoredAsIs(t *testing.T) {
	f := newFixture(t)
	const sku = `'; DROP TABLE events; --`
	const reason = `'); DELETE FROM events WHERE ('1'='1`
	code, body := f.do(t, "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":`+jsonString(sku)+`,"price":5,"quantity":1}]}`)
	if code != http.StatusCreated {
		t.Fatalf("create = %d %v", code, body)
	}
	id := body["id"].(string)
	if code, body := f.do(t, "POST", "/orders/"+id+"/cancel", `{"reason":`+jsonString(reason)+`}`); code != http.StatusOK {
		t.Fatalf("cancel = %d %v", code, body)
	}
	st := f.state(t, id)
	if st.Head != 2 || len(st.Events) != 2 {
		t.Fatalf("store head %d with %d events of the order, want 2 and 2", st.Head, len(st.Events))
	}
	var created orders.OrderCreated
	var cancelled orders.OrderCancelled
	if err := json.Unmarshal(st.Events[0].Data, &created); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(st.Events[1].Data, &cancelled); err != nil {
		t.Fatal(err)
	}
	if got := created.Items[0].SKU; got != sku {
		t.Errorf("stored sku = %q, want %q", got, sku)
	}
	if got := cancelled.Reason; got != reason {
		t.Errorf("stored reason = %q, want %q", got, reason)
	}
	f.waitProjected(t, id, 2)
}
