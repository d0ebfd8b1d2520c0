// Package load generates traffic against the order system's HTTP API at a
// target rate: creates, then pays, ships and cancels orders it created, each
// successful command followed (optionally) by a read of the order, as a UI
// does after a save. Requests go through an otelhttp client transport, so
// traces start at the client and propagate to the server.
//
// Live counters (Generator.Counters) are safe to read while it runs; Run
// returns a Summary with outcomes and latency percentiles.
package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lagscope/lagscope/orders/telemetry"
	"github.com/lagscope/lagscope/progress"
)

// Kinds of request, as keys of Summary.Outcomes.
const (
	KindCreate = "create"
	KindPay    = "pay"
	KindShip   = "ship"
	KindCancel = "cancel"
	KindRead   = "read"
)

// Outcomes of a request.
const (
	OutcomeOK          = "ok"           // 2xx
	OutcomeStale       = "stale"        // read: 200 with an older version than written
	OutcomeInvalid     = "invalid"      // 400
	OutcomeNotFound    = "not_found"    // 404 (for a read: not projected yet)
	OutcomeConflict    = "conflict"     // 409
	OutcomeServerError = "server_error" // 5xx and other statuses
	OutcomeError       = "error"        // transport error or timeout
)

// Counters are live totals since Run started.
type Counters struct {
	// Commands counts commands completed (any outcome); Failed those that
	// did not get a 2xx.
	Commands, Failed int64
	// Reads counts reads after writes; Stale those that returned an older
	// version than the command wrote, Missing those that got 404.
	Reads, Stale, Missing int64
	// InFlight is the number of requests being sent.
	InFlight int64
}

// Summary is the result of a run.
type Summary struct {
	Elapsed time.Duration
	// Counters at the end of the run.
	Counters
	// Outcomes counts requests by kind then outcome.
	Outcomes map[string]map[string]int64
	// Latency percentiles of commands and of reads.
	CommandP50, CommandP99, ReadP50, ReadP99 time.Duration
}

// Rate returns commands per second over the run.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Commands) / s.Elapsed.Seconds()
}

// WriteTo writes a human-readable summary.
func (s Summary) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "commands: %d in %v (%.1f/s), %d failed; p50 %v, p99 %v\n",
		s.Commands, s.Elapsed.Round(time.Millisecond), s.Rate(), s.Failed, s.CommandP50, s.CommandP99)
	fmt.Fprintf(&b, "reads:    %d, %d stale, %d not yet projected; p50 %v, p99 %v\n",
		s.Reads, s.Stale, s.Missing, s.ReadP50, s.ReadP99)
	for _, kind := range []string{KindCreate, KindPay, KindShip, KindCancel, KindRead} {
		if len(s.Outcomes[kind]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-7s", kind)
		for _, o := range []string{OutcomeOK, OutcomeStale, OutcomeInvalid, OutcomeNotFound, OutcomeConflict, OutcomeServerError, OutcomeError} {
			if n := s.Outcomes[kind][o]; n > 0 {
				fmt.Fprintf(&b, " %s=%d", o, n)
			}
		}
		b.WriteByte('\n')
	}
	n, err := w.Write(b.Bytes())
	return int64(n), err
}

// Generator sends load. Create it with New and Run it once.
type Generator struct {
	cfg    Config
	client *http.Client

	commands, failed, reads, stale, missing, inFlight atomic.Int64

	mu       sync.Mutex // guards what follows
	rng      *rand.Rand
	created  []tracked // orders in status created, not checked out
	paid     []tracked
	outcomes map[string]map[string]int64
	cmdLat   reservoir
	readLat  reservoir
	seq      int64
}

type tracked struct {
	id      string
	version int64
}

// New returns a Generator for cfg.
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	cfg = cfg.withDefaults()
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	base := cfg.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = cfg.Concurrency
		base = t
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Generator{
		cfg: cfg,
		client: &http.Client{
			Timeout: cfg.RequestTimeout,
			Transport: otelhttp.NewTransport(base,
				otelhttp.WithTracerProvider(tp),
				otelhttp.WithPropagators(telemetry.Propagator),
				otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
					return r.Method + " " + routeOf(r.URL.Path)
				}),
			),
		},
		rng:      rand.New(rand.NewPCG(seed, seed>>1)),
		outcomes: map[string]map[string]int64{},
		cmdLat:   newReservoir(maxSamples),
		readLat:  newReservoir(maxSamples),
	}, nil
}

// Counters returns the live counters. Safe to call while Run runs.
func (g *Generator) Counters() Counters {
	return Counters{
		Commands: g.commands.Load(), Failed: g.failed.Load(),
		Reads: g.reads.Load(), Stale: g.stale.Load(), Missing: g.missing.Load(),
		InFlight: g.inFlight.Load(),
	}
}

// Run sends commands at the target rate until Count commands, Duration, or
// ctx ends, waits for requests in flight (each bounded by RequestTimeout),
// and returns the summary. Failed requests are counted, not returned as
// errors.
func (g *Generator) Run(ctx context.Context) (Summary, error) {
	if g.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.Duration)
		defer cancel()
	}
	var prog *progress.Bar
	if g.cfg.Progress != nil {
		prog = progress.New(g.cfg.Progress, g.expected(), "commands", 100*time.Millisecond)
	}
	begin := time.Now()
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range g.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				g.step(context.WithoutCancel(ctx))
				if prog != nil {
					prog.Add(1)
				}
			}
		}()
	}
	g.dispatch(ctx, jobs, begin)
	close(jobs)
	wg.Wait()
	if prog != nil {
		prog.Finish()
	}
	return g.summary(time.Since(begin)), nil
}

// expected returns how many commands the run will send, -1 if unknown.
func (g *Generator) expected() int64 {
	max := g.cfg.Count
	if g.cfg.NoRateLimit {
		if max == 0 {
			return -1
		}
		return max
	}
	if est := int64(g.cfg.Rate * g.cfg.Duration.Seconds()); max == 0 || (est > 0 && est < max) {
		max = est
	}
	if max == 0 {
		max = -1
	}
	return max
}

// dispatch hands out jobs so that the number handed out follows the target
// rate (with NoRateLimit, as fast as workers take them); when every worker
// is busy it waits (the rate then drops). It returns when Count jobs were
// handed out or ctx ends.
func (g *Generator) dispatch(ctx context.Context, jobs chan<- struct{}, begin time.Time) {
	if g.cfg.NoRateLimit {
		for sent := int64(0); g.cfg.Count == 0 || sent < g.cfg.Count; sent++ {
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		return
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var sent int64
	for {
		due := int64(time.Since(begin).Seconds()*g.cfg.Rate) + 1
		for ; sent < due; sent++ {
			if g.cfg.Count > 0 && sent >= g.cfg.Count {
				return
			}
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		if g.cfg.Count > 0 && sent >= g.cfg.Count {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// step sends one command and, maybe, a read of the order it touched.
func (g *Generator) step(ctx context.Context) {
	kind, o := g.choose()
	var (
		path string
		body any
	)
	switch kind {
	case KindCreate:
		path, body = "/orders", g.newOrder()
	case KindPay:
		path, body = "/orders/"+o.id+"/pay", map[string]string{"method": g.pick([]string{"card", "paypal", "bank_transfer", "invoice"})}
	case KindShip:
		path, body = "/orders/"+o.id+"/ship", map[string]string{"tracking_number": fmt.Sprintf("TRK-%d", g.next())}
	case KindCancel:
		path, body = "/orders/"+o.id+"/cancel", map[string]string{"reason": g.pick([]string{"changed mind", "found cheaper", "too slow", "duplicate order"})}
	}
	var res struct {
		ID      string `json:"id"`
		Version int64  `json:"version"`
	}
	start := time.Now()
	outcome := g.send(ctx, http.MethodPost, g.cfg.BaseURL+path, body, &res)
	g.record(kind, outcome, time.Since(start), &g.cmdLat)
	g.commands.Add(1)
	if outcome != OutcomeOK {
		g.failed.Add(1)
		if kind != KindCreate {
			g.checkIn(kind, o, false, 0)
		}
		return
	}
	if kind == KindCreate {
		o.id = res.ID
	}
	g.checkIn(kind, o, true, res.Version)
	if g.cfg.ReadAfterWrite > 0 && g.chance(g.cfg.ReadAfterWrite) {
		g.read(ctx, res.ID, res.Version)
	}
}

func (g *Generator) read(ctx context.Context, id string, version int64) {
	var v struct {
		Version int64 `json:"version"`
	}
	start := time.Now()
	outcome := g.send(ctx, http.MethodGet, g.cfg.QueryURL+"/orders/"+id, nil, &v)
	if outcome == OutcomeOK && v.Version < version {
		outcome = OutcomeStale
		g.stale.Add(1)
	}
	if outcome == OutcomeNotFound {
		g.missing.Add(1)
	}
	g.reads.Add(1)
	g.record(KindRead, outcome, time.Since(start), &g.readLat)
}

// send does one request and decodes a 2xx JSON response into out.
func (g *Generator) send(ctx context.Context, method, url string, body, out any) string {
	g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return OutcomeError
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return OutcomeError
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return OutcomeError
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
			return OutcomeError
		}
		return OutcomeOK
	case resp.StatusCode == http.StatusBadRequest:
		return OutcomeInvalid
	case resp.StatusCode == http.StatusNotFound:
		return OutcomeNotFound
	case resp.StatusCode == http.StatusConflict:
		return OutcomeConflict
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return OutcomeServerError
	}
}

// routeOf maps a request path to the route pattern that names the client
// span, as the server names its span.
func routeOf(path string) string {
	if strings.HasSuffix(path, "/orders") {
		return "/orders"
	}
	for _, action := range []string{"/pay", "/ship", "/cancel"} {
		if strings.HasSuffix(path, action) {
			return "/orders/{id}" + action
		}
	}
	return "/orders/{id}"
}

func (g *Generator) record(kind, outcome string, d time.Duration, lat *reservoir) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.outcomes[kind]
	if m == nil {
		m = map[string]int64{}
		g.outcomes[kind] = m
	}
	m[outcome]++
	lat.add(d, g.rng)
}

// choose picks the next command and checks out the order it applies to, so
// that no two workers send commands for one order at once.
func (g *Generator) choose() (string, tracked) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.cfg.Mix
	open := len(g.created) + len(g.paid)
	create := m.Create
	if open >= g.cfg.MaxOpenOrders {
		create = 0
	}
	pay, ship, cancel := m.Pay, m.Ship, m.Cancel
	if len(g.created) == 0 {
		pay = 0
	}
	if len(g.paid) == 0 {
		ship = 0
	}
	if open == 0 {
		cancel = 0
	}
	total := create + pay + ship + cancel
	if total == 0 {
		return KindCreate, tracked{}
	}
	x := g.rng.Float64() * total
	switch {
	case x < create:
		return KindCreate, tracked{}
	case x < create+pay:
		return KindPay, takeRandom(&g.created, g.rng)
	case x < create+pay+ship:
		return KindShip, takeRandom(&g.paid, g.rng)
	default:
		if g.rng.IntN(open) < len(g.created) {
			return KindCancel, takeRandom(&g.created, g.rng)
		}
		return KindCancel, takeRandom(&g.paid, g.rng)
	}
}

// checkIn returns an order to the pool of its status. Shipped and cancelled
// orders are done; so is an order whose cancel failed (its status is unknown).
func (g *Generator) checkIn(kind string, o tracked, ok bool, version int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var pool *[]tracked
	switch {
	case ok && kind == KindCreate, !ok && kind == KindPay:
		pool = &g.created
	case ok && kind == KindPay, !ok && kind == KindShip:
		pool = &g.paid
	default:
		return
	}
	if ok {
		o.version = version
	}
	*pool = append(*pool, o)
}

func takeRandom(s *[]tracked, rng *rand.Rand) tracked {
	i := rng.IntN(len(*s))
	o := (*s)[i]
	(*s)[i] = (*s)[len(*s)-1]
	*s = (*s)[:len(*s)-1]
	return o
}

type itemJSON struct {
	SKU      string `json:"sku"`
	Price    int64  `json:"price"`
	Quantity int64  `json:"quantity"`
}

func (g *Generator) newOrder() any {
	g.mu.Lock()
	defer g.mu.Unlock()
	items := make([]itemJSON, 1+g.rng.IntN(3))
	for i := range items {
		items[i] = itemJSON{
			SKU:      fmt.Sprintf("sku-%03d", g.rng.IntN(200)),
			Price:    int64(100 + g.rng.IntN(9900)),
			Quantity: int64(1 + g.rng.IntN(5)),
		}
	}
	return map[string]any{"customer_id": fmt.Sprintf("cust-%d", g.rng.IntN(g.cfg.Customers)), "items": items}
}

func (g *Generator) pick(from []string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return from[g.rng.IntN(len(from))]
}

func (g *Generator) chance(p float64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rng.Float64() < p
}

func (g *Generator) next() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	return g.seq
}

func (g *Generator) summary(elapsed time.Duration) Summary {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := Summary{Elapsed: elapsed, Counters: g.Counters(), Outcomes: map[string]map[string]int64{}}
	for k, m := range g.outcomes {
		out.Outcomes[k] = map[string]int64{}
		for o, n := range m {
			out.Outcomes[k][o] = n
		}
	}
	out.CommandP50, out.CommandP99 = g.cmdLat.quantile(0.50), g.cmdLat.quantile(0.99)
	out.ReadP50, out.ReadP99 = g.readLat.quantile(0.50), g.readLat.quantile(0.99)
	return out
}
