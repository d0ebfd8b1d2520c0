package load

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Mix weighs the commands the generator sends. A command with no eligible
// order (pay needs a created order, ship a paid one, cancel a created or paid
// one) becomes a create.
type Mix struct {
	Create, Pay, Ship, Cancel float64
}

// DefaultMix creates a third of the time and moves most orders on to paid
// and shipped, cancelling some.
var DefaultMix = Mix{Create: 4, Pay: 3, Ship: 2, Cancel: 1}

// Config configures a Generator.
type Config struct {
	// BaseURL of the command API, e.g. "http://127.0.0.1:8080". Required.
	BaseURL string
	// QueryURL of the query API for reads after writes. Default BaseURL.
	QueryURL string
	// Rate is the target of commands per second. Default 10; set
	// NoRateLimit to send as fast as Concurrency workers go (Rate ignored).
	Rate        float64
	NoRateLimit bool
	// Duration stops the run after this long. Count stops it after this many
	// commands. Either, both (first reached) or neither (until ctx ends).
	Duration time.Duration
	Count    int64
	// Concurrency is the number of workers, which bounds requests in flight.
	// Default 4.
	Concurrency int
	// Mix of commands. Default DefaultMix.
	Mix Mix
	// ReadAfterWrite is the probability (0..1) that a successful command is
	// followed by GET /orders/{id}, as a UI does after a save. Default 1;
	// set NoReads to send none.
	ReadAfterWrite float64
	NoReads        bool
	// Customers is how many customer ids ("cust-0"...) orders spread over.
	// Default 100.
	Customers int
	// MaxOpenOrders bounds the orders the generator tracks as created or
	// paid; at the bound it stops creating. Default 10000.
	MaxOpenOrders int
	// Progress, when set, receives the run's progress (e.g. os.Stderr): a
	// bar when it is a terminal, otherwise a plain line every 10s and one
	// at the end, so that a log or a CI job does not fill with a bar
	// redrawn by carriage returns. Default nil: none.
	Progress io.Writer
	// TracerProvider traces client requests through otelhttp, and so
	// propagates trace context to the server. Default: no-op (no client
	// spans, server spans become roots).
	TracerProvider trace.TracerProvider
	// Transport is the base HTTP transport that otelhttp wraps. Default: a
	// clone of http.DefaultTransport with Concurrency idle connections.
	Transport http.RoundTripper
	// RequestTimeout bounds one request. Default 10s.
	RequestTimeout time.Duration
	// Seed makes the choices reproducible. Default 0: random.
	Seed uint64
}

// DefaultConfig returns the default configuration, without a BaseURL.
func DefaultConfig() Config {
	return Config{
		Rate:           10,
		Concurrency:    4,
		Mix:            DefaultMix,
		ReadAfterWrite: 1,
		Customers:      100,
		MaxOpenOrders:  10_000,
		RequestTimeout: 10 * time.Second,
	}
}

// Validate reports a missing base URL and values out of range.
func (c Config) Validate() error {
	if _, err := url.ParseRequestURI(c.BaseURL); err != nil || c.BaseURL == "" {
		return fmt.Errorf("base url %q: want http://host:port", c.BaseURL)
	}
	if c.QueryURL != "" {
		if _, err := url.ParseRequestURI(c.QueryURL); err != nil {
			return fmt.Errorf("query url %q: want http://host:port", c.QueryURL)
		}
	}
	switch {
	case c.Rate < 0:
		return errors.New("rate must not be negative")
	case c.Duration < 0 || c.Count < 0:
		return errors.New("duration and count must not be negative")
	case c.Concurrency < 0 || c.Customers < 0 || c.MaxOpenOrders < 0:
		return errors.New("concurrency, customers and max open orders must not be negative")
	case c.ReadAfterWrite < 0 || c.ReadAfterWrite > 1:
		return fmt.Errorf("read-after-write probability %v not in [0, 1]", c.ReadAfterWrite)
	case c.Mix.Create < 0 || c.Mix.Pay < 0 || c.Mix.Ship < 0 || c.Mix.Cancel < 0:
		return errors.New("mix weights must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.QueryURL == "" {
		c.QueryURL = c.BaseURL
	}
	if c.Rate == 0 {
		c.Rate = d.Rate
	}
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.Mix == (Mix{}) {
		c.Mix = d.Mix
	}
	if c.ReadAfterWrite == 0 && !c.NoReads {
		c.ReadAfterWrite = d.ReadAfterWrite
	}
	if c.NoReads {
		c.ReadAfterWrite = 0
	}
	if c.Customers == 0 {
		c.Customers = d.Customers
	}
	if c.MaxOpenOrders == 0 {
		c.MaxOpenOrders = d.MaxOpenOrders
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	return c
}
