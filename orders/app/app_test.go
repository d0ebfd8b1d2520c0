package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kfake"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/postgres/pgtest"
	"github.com/lagscope/lagscope/orders/projection"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, cfg app.Config) *app.App {
	t.Helper()
	a, err := app.New(cfg, nil)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("Start() error = %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
	})
	return a
}

func config(role app.Role, store string, tp *sdktrace.TracerProvider) app.Config {
	cfg := app.DefaultConfig()
	cfg.Role, cfg.Store, cfg.Listen, cfg.TracerProvider = role, store, "127.0.0.1:0", tp
	cfg.Projection.PollInterval = 10 * time.Millisecond
	return cfg
}

func call(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRoleAll(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	a := start(t, config(app.RoleAll, "sqlite::memory:", tp))
	base := "http://" + a.Addr()

	var created struct{ ID string }
	if code := call(t, "POST", base+"/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":100,"quantity":3}]}`, &created); code != 201 {
		t.Fatalf("create = %d", code)
	}
	waitFor(t, "the order in orders_view", func() bool {
		return call(t, "GET", base+"/orders/"+created.ID, "", nil) == 200
	})
	var health map[string]string
	if code := call(t, "GET", base+"/healthz", "", &health); code != 200 || health["role"] != "all" {
		t.Errorf("healthz = %d %v", code, health)
	}
	waitFor(t, "both projections", func() bool {
		var stats []projection.Stats
		call(t, "GET", base+"/projections", "", &stats)
		return len(stats) == 2 && stats[0].Checkpoint == 1 && stats[1].Checkpoint == 1
	})
	var sum orders.Summary
	call(t, "GET", base+"/orders/summary", "", &sum)
	if diff := cmp.Diff(sum, orders.Summary{Orders: 1, Created: 1}); diff != "" {
		t.Errorf("summary (-got +want):\n%s", diff)
	}
	if len(rec.Ended()) == 0 {
		t.Error("the injected tracer provider recorded no spans")
	}
}

// TestRolesShareAFile runs the three roles as separate Apps on one SQLite
// file, as three processes would.
func TestRolesShareAFile(t *testing.T) {
	testRolesShareAStore(t, "sqlite:"+filepath.Join(t.TempDir(), "orders.db"), 0, nil)
}

func TestRolesShareAPostgresSchema(t *testing.T) {
	// The projector polls once an hour: only NOTIFY from the command
	// process's appends can wake it in time.
	testRolesShareAStore(t, pgtest.DSN(t), time.Hour, nil)
}

// On Kafka, the projector never reads the store for events: it polls once
// an hour and gets them from the topic the command process's relay fills.
func TestRolesShareAFileOnKafka(t *testing.T) {
	testRolesShareAStore(t, "sqlite:"+filepath.Join(t.TempDir(), "orders.db"), time.Hour, kafkaBus(t))
}

func TestRolesShareAPostgresSchemaOnKafka(t *testing.T) {
	testRolesShareAStore(t, pgtest.DSN(t), time.Hour, kafkaBus(t))
}

// kafkaBus starts an in-process broker and returns an edit of a config
// that puts the App on it.
func kafkaBus(t *testing.T) func(*app.Config) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, "127.0.0.1:0")
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return func(cfg *app.Config) {
		cfg.Bus = app.BusKafka
		cfg.Kafka.Brokers = c.ListenAddrs()
		cfg.Kafka.PollInterval, cfg.Kafka.MaxWait = 10*time.Millisecond, 50*time.Millisecond
	}
}

// testRolesShareAStore runs the three roles as separate Apps on one store.
// poll, when not zero, is the projector's poll interval; bus, when not nil,
// edits the configs of the roles.
func testRolesShareAStore(t *testing.T, store string, poll time.Duration, bus func(*app.Config)) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	if bus == nil {
		bus = func(*app.Config) {}
	}
	cmdCfg := config(app.RoleCommand, store, tp)
	bus(&cmdCfg)
	cmd := start(t, cmdCfg)
	projCfg := config(app.RoleProjector, store, tp)
	bus(&projCfg)
	projCfg.Listen = ""
	if poll != 0 {
		projCfg.Projection.PollInterval = poll
	}
	proj := start(t, projCfg)
	query := start(t, config(app.RoleQuery, store, tp))

	tests := []struct {
		name   string
		app    *app.App
		method string
		path   string
		want   int
	}{
		{name: "command role has no queries", app: cmd, method: "GET", path: "/orders/summary", want: 404},
		{name: "query role has no commands", app: query, method: "POST", path: "/orders", want: 405},
		{name: "query role has no projections", app: query, method: "GET", path: "/projections", want: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := call(t, tt.method, "http://"+tt.app.Addr()+tt.path, "{}", nil); got != tt.want {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, got, tt.want)
			}
		})
	}

	var ids []string
	for i := range 5 {
		var res struct{ ID string }
		body := fmt.Sprintf(`{"customer_id":"cust-%d","items":[{"sku":"a","price":100,"quantity":1}]}`, i)
		if code := call(t, "POST", "http://"+cmd.Addr()+"/orders", body, &res); code != 201 {
			t.Fatalf("create = %d", code)
		}
		ids = append(ids, res.ID)
	}
	if code := call(t, "POST", "http://"+cmd.Addr()+"/orders/"+ids[0]+"/pay", `{"method":"card"}`, nil); code != 200 {
		t.Fatalf("pay = %d", code)
	}
	waitFor(t, "the query role to see every order", func() bool {
		for i, id := range ids {
			var v orders.OrderView
			want := int64(1)
			if i == 0 {
				want = 2
			}
			if call(t, "GET", "http://"+query.Addr()+"/orders/"+id, "", &v) != 200 || v.Version != want {
				return false
			}
		}
		return true
	})
	waitFor(t, "the projector's counters", func() bool {
		got := proj.Projections()
		return len(got) == 2 && got[0].Projected == 6 && got[1].Projected == 6
	})
	if proj.Addr() != "" {
		t.Errorf("projector without Listen has Addr %q", proj.Addr())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*app.Config)
		wantErr bool
	}{
		{name: "default", change: func(*app.Config) {}},
		{name: "unknown role", change: func(c *app.Config) { c.Role = "writer" }, wantErr: true},
		{name: "unknown store", change: func(c *app.Config) { c.Store = "mysql://x" }, wantErr: true},
		{name: "postgres store", change: func(c *app.Config) { c.Store = "postgres://orders@db.example:5432/orders?search_path=shop" }},
		{name: "postgresql store", change: func(c *app.Config) { c.Store = "postgresql://orders@db.example/orders" }},
		{name: "bad postgres store", change: func(c *app.Config) { c.Store = "postgres://orders@db.example:port/orders" }, wantErr: true},
		{name: "no listen for query", change: func(c *app.Config) { c.Role, c.Listen = app.RoleQuery, "" }, wantErr: true},
		{name: "no listen for projector", change: func(c *app.Config) { c.Role, c.Listen = app.RoleProjector, "" }},
		{name: "bad otlp protocol", change: func(c *app.Config) { c.OTLP.Protocol = "udp" }, wantErr: true},
		{name: "bad drop rate", change: func(c *app.Config) {
			c.Projection.Faults = map[string]projection.Faults{projection.OrdersView: {DropRate: 2}}
		}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := app.DefaultConfig()
			tt.change(&cfg)
			if err := cfg.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
