package forward

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"google.golang.org/grpc/metadata"
)

func TestForwardDeliversEverySpanOnce(t *testing.T) {
	const requests, spansPer = 40, 8
	for _, protocol := range protocols {
		for _, enc := range []Encoding{Protobuf, JSON} {
			for _, compression := range []string{CompressionNone, CompressionGzip} {
				t.Run(fmt.Sprintf("%s/%s/%s", protocol, encName(enc), compression), func(t *testing.T) {
					b := startBackend(t, &backend{}, "", "")
					cfg := testConfig(protocol, b.addr(protocol))
					cfg.Compression = compression
					f := newForwarder(t, cfg)
					want := map[pcommon.SpanID][]receivedSpan{}
					for i := range requests {
						td := traces(i, spansPer, 0)
						body := encode(t, td, enc)
						if !f.Forward(body, enc, spansPer) {
							t.Fatalf("Forward(request %d) = false", i)
						}
						clear(body) // the caller's buffer is reused: Forward must have copied it
						for k := range spansPer {
							s := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(k)
							want[s.SpanID()] = []receivedSpan{{Service: "orders", Name: s.Name(), Attrs: s.Attributes().AsRaw()}}
						}
					}
					shutdown(t, f, 5*time.Second) // flushes
					if diff := cmp.Diff(b.received(), want); diff != "" {
						t.Errorf("backend received (-got +want):\n%s", diff)
					}
					if diff := cmp.Diff(f.counts(), counts{Sent: requests * spansPer, Dropped: map[string]int{}}); diff != "" {
						t.Errorf("counts (-got +want):\n%s", diff)
					}
				})
			}
		}
	}
}

func encName(e Encoding) string {
	if e == JSON {
		return "json"
	}
	return "protobuf"
}

func TestForwardDeliversQueuedRequestsWhenBackendComesUp(t *testing.T) {
	const requests, spansPer = 5, 4
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			addr := freeAddr(t)
			f := newForwarder(t, testConfig(protocol, addr))
			for i := range requests {
				f.Forward(encode(t, traces(i, spansPer, 0), Protobuf), Protobuf, spansPer)
			}
			waitFor(t, "a retry against the absent backend", func() bool { return retries(f) >= 2 })
			var b *backend
			if protocol == ProtocolGRPC {
				b = startBackend(t, &backend{}, addr, "")
			} else {
				b = startBackend(t, &backend{}, "", addr)
			}
			waitFor(t, "every span at the backend", func() bool { return b.spanCount() == requests*spansPer })
			shutdown(t, f, 5*time.Second)
			if got, want := b.spanCount(), requests*spansPer; got != want {
				t.Errorf("backend got %d spans, want %d", got, want)
			}
			if diff := cmp.Diff(f.counts(), counts{Sent: requests * spansPer, Dropped: map[string]int{}}); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
		})
	}
}

func retries(f *Forwarder) int { return int(testutilValue(f.metrics.retries)) }

func TestForwardRetriesWhatOTLPSaysIsRetryable(t *testing.T) {
	tests := []struct {
		name     string
		protocol string
		err      error         // the backend's first answer
		minGap   time.Duration // between the first attempt and the retry
	}{
		// ResourceExhausted with RetryInfo of 300ms; the backoff alone would wait 10ms.
		{"grpc/resource_exhausted_with_retry_info", ProtocolGRPC, retryAfterError(300 * time.Millisecond), 300 * time.Millisecond},
		{"grpc/unavailable", ProtocolGRPC, errBackend, 0},
		// 429 and 503, both with Retry-After: 1.
		{"http/429_retry_after", ProtocolHTTP, retryAfterError(time.Second), time.Second},
		{"http/503_retry_after", ProtocolHTTP, errBackend, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBackend(t, &backend{fail: func(call int) error {
				if call == 1 {
					return tt.err
				}
				return nil
			}}, "", "")
			f := newForwarder(t, testConfig(tt.protocol, b.addr(tt.protocol)))
			f.Forward(encode(t, traces(1, 3, 0), Protobuf), Protobuf, 3)
			waitFor(t, "the retried request at the backend", func() bool { return b.spanCount() == 3 })
			calls := b.callTimes()
			if len(calls) != 2 {
				t.Fatalf("backend saw %d calls, want 2", len(calls))
			}
			if gap := calls[1].Sub(calls[0]); gap < tt.minGap {
				t.Errorf("retried after %v, want at least the advised %v", gap, tt.minGap)
			}
			shutdown(t, f, 5*time.Second)
			if diff := cmp.Diff(f.counts(), counts{Sent: 3, Dropped: map[string]int{}}); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
			if got := retries(f); got != 1 {
				t.Errorf("retries = %d, want 1", got)
			}
		})
	}
}

func TestForwardDropsWhatTheBackendRejects(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			b := startBackend(t, &backend{}, "", "")
			f := newForwarder(t, testConfig(protocol, b.addr(protocol)))
			// Not protobuf: HTTP 400 / gRPC InvalidArgument, which OTLP says not to retry.
			f.Forward([]byte("\xff\xff\xff not a request"), Protobuf, 7)
			waitFor(t, "the drop", func() bool { return f.counts().Dropped["rejected"] == 7 })
			shutdown(t, f, 5*time.Second)
			if diff := cmp.Diff(f.counts(), counts{Dropped: map[string]int{"rejected": 7}}); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
			if got := retries(f); got != 0 {
				t.Errorf("retries = %d, want 0", got)
			}
		})
	}
}

func TestForwardCountsPartialSuccess(t *testing.T) {
	for _, protocol := range protocols {
		for _, enc := range []Encoding{Protobuf, JSON} {
			t.Run(protocol+"/"+encName(enc), func(t *testing.T) {
				b := startBackend(t, &backend{}, "", "")
				f := newForwarder(t, testConfig(protocol, b.addr(protocol)))
				// 2 of 5 spans have an all-zero span id: the receiver rejects them as partial success.
				f.Forward(encode(t, traces(1, 5, 2), enc), enc, 5)
				shutdown(t, f, 5*time.Second)
				if diff := cmp.Diff(f.counts(), counts{Sent: 3, Dropped: map[string]int{"partial_success": 2}}); diff != "" {
					t.Errorf("counts (-got +want):\n%s", diff)
				}
				if got := b.spanCount(); got != 3 {
					t.Errorf("backend got %d spans, want 3", got)
				}
			})
		}
	}
}

func TestForwardGivesUpAfterMaxElapsedTime(t *testing.T) {
	b := startBackend(t, &backend{fail: func(int) error { return errBackend }}, "", "")
	cfg := testConfig(ProtocolGRPC, b.grpcAddr)
	cfg.Retry.MaxElapsedTime = 200 * time.Millisecond
	f := newForwarder(t, cfg)
	f.Forward(encode(t, traces(1, 2, 0), Protobuf), Protobuf, 2)
	waitFor(t, "the drop", func() bool { return f.counts().Dropped["retries_exhausted"] == 2 })
	if got := retries(f); got < 1 {
		t.Errorf("retries = %d, want some", got)
	}
}

func TestForwardNeverBlocksOnAStalledBackend(t *testing.T) {
	const requests, spansPer = 2000, 4
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			b := startBackend(t, &backend{block: make(chan struct{})}, "", "")
			cfg := testConfig(protocol, b.addr(protocol))
			cfg.Concurrency = 1
			body := encode(t, traces(1, spansPer, 0), Protobuf)
			cfg.QueueBytes = int64(10 * len(body)) // ten requests
			f := newForwarder(t, cfg)

			var slowest, total time.Duration
			queued := 0
			for range requests {
				start := time.Now()
				ok := f.Forward(body, Protobuf, spansPer)
				d := time.Since(start)
				total += d
				slowest = max(slowest, d)
				if ok {
					queued++
				}
				if bytes, _ := f.queue.size(); bytes > cfg.QueueBytes {
					t.Fatalf("queue holds %d bytes, more than its bound of %d", bytes, cfg.QueueBytes)
				}
			}
			t.Logf("Forward against a stalled backend: mean %v, slowest %v", total/requests, slowest)
			// Generous for a loaded machine under -race; typical figures are
			// a microsecond or two on average.
			if slowest > 20*time.Millisecond {
				t.Errorf("slowest Forward took %v: it waits on something", slowest)
			}
			if queued != 10 {
				t.Errorf("queued %d requests, want the 10 that fit", queued)
			}
			b.release()
			waitFor(t, "the queued requests at the backend", func() bool { return b.spanCount() == queued*spansPer })
			shutdown(t, f, 5*time.Second)
			want := counts{Sent: queued * spansPer, Dropped: map[string]int{"queue_full": (requests - queued) * spansPer}}
			if diff := cmp.Diff(f.counts(), want); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
		})
	}
}

func TestForwardSendsHeaders(t *testing.T) {
	headers := map[string]string{"Authorization": "Bearer s3cret", "X-Scope-OrgID": "tenant-1"}
	t.Run("grpc", func(t *testing.T) {
		var mu sync.Mutex
		var got metadata.MD
		b := startBackend(t, &backend{onCall: func(ctx context.Context) {
			md, _ := metadata.FromIncomingContext(ctx)
			mu.Lock()
			got = md
			mu.Unlock()
		}}, "", "")
		cfg := testConfig(ProtocolGRPC, b.grpcAddr)
		cfg.Headers = headers
		f := newForwarder(t, cfg)
		f.Forward(encode(t, traces(1, 1, 0), Protobuf), Protobuf, 1)
		shutdown(t, f, 5*time.Second)
		mu.Lock()
		defer mu.Unlock()
		for k, v := range map[string]string{"authorization": "Bearer s3cret", "x-scope-orgid": "tenant-1"} {
			if diff := cmp.Diff(got.Get(k), []string{v}); diff != "" {
				t.Errorf("metadata %s (-got +want):\n%s", k, diff)
			}
		}
	})
	t.Run("http", func(t *testing.T) {
		got := make(chan http.Header, 1)
		gotBody := make(chan []byte, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
				http.NotFound(w, r)
				return
			}
			got <- r.Header.Clone()
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			b, _ := io.ReadAll(zr)
			gotBody <- b
			w.Header().Set("Content-Type", "application/x-protobuf")
		}))
		defer srv.Close()
		cfg := testConfig(ProtocolHTTP, srv.Listener.Addr().String())
		cfg.Headers = headers
		cfg.Compression = CompressionGzip
		f := newForwarder(t, cfg)
		body := encode(t, traces(1, 1, 0), Protobuf)
		f.Forward(body, Protobuf, 1)
		shutdown(t, f, 5*time.Second)
		h := <-got
		if diff := cmp.Diff(<-gotBody, body); diff != "" {
			t.Errorf("gunzipped body (-got +want):\n%s", diff)
		}
		if got, want := h.Get("Content-Encoding"), "gzip"; got != want {
			t.Errorf("Content-Encoding = %q, want %q", got, want)
		}
		for k, v := range headers {
			if h.Get(k) != v {
				t.Errorf("header %s = %q, want %q", k, h.Get(k), v)
			}
		}
		if got, want := h.Get("Content-Type"), "application/x-protobuf"; got != want {
			t.Errorf("Content-Type = %q, want %q", got, want)
		}
		if diff := cmp.Diff(f.counts(), counts{Sent: 1, Dropped: map[string]int{}}); diff != "" {
			t.Errorf("counts (-got +want):\n%s", diff)
		}
	})
}

func TestShutdownCountsWhatItCannotFlush(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			b := startBackend(t, &backend{block: make(chan struct{})}, "", "")
			cfg := testConfig(protocol, b.addr(protocol))
			cfg.Concurrency = 2
			f := newForwarder(t, cfg)
			const requests, spansPer = 6, 3
			for i := range requests {
				f.Forward(encode(t, traces(i, spansPer, 0), Protobuf), Protobuf, spansPer)
			}
			// Both senders are stuck in the stalled backend, four requests wait behind them.
			waitFor(t, "two requests at the backend", func() bool { return b.blocked.Load() == 2 && f.queueLen() == 4 })

			const budget = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			start := time.Now()
			err := f.Shutdown(ctx)
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
			}
			if took < budget || took > budget+time.Second {
				t.Errorf("Shutdown took %v, want about its budget of %v", took, budget)
			}
			if f.Forward(encode(t, traces(99, 1, 0), Protobuf), Protobuf, 1) {
				t.Error("Forward after Shutdown = true, want false")
			}
			want := counts{Dropped: map[string]int{"shutdown": requests*spansPer + 1}}
			if diff := cmp.Diff(f.counts(), want); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
			if bytes, n := f.queue.size(); bytes != 0 || n != 0 {
				t.Errorf("queue holds %d bytes in %d requests after Shutdown, want none", bytes, n)
			}
		})
	}
}

func TestShutdownWithoutStartDropsTheQueue(t *testing.T) {
	f, err := New(testConfig(ProtocolGRPC, freeAddr(t)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Forward(encode(t, traces(1, 2, 0), Protobuf), Protobuf, 2)
	shutdown(t, f, time.Second)
	if diff := cmp.Diff(f.counts(), counts{Dropped: map[string]int{"shutdown": 2}}); diff != "" {
		t.Errorf("counts (-got +want):\n%s", diff)
	}
	if err := f.Start(context.Background()); err == nil {
		t.Error("Start after Shutdown succeeded")
	}
}

func TestShutdownFlushesTheQueue(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			b := startBackend(t, &backend{}, "", "")
			f, err := New(testConfig(protocol, b.addr(protocol)), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			const requests, spansPer = 30, 5
			// Queued before Start: all of it is still in the queue when
			// Shutdown begins.
			for i := range requests {
				f.Forward(encode(t, traces(i, spansPer, 0), Protobuf), Protobuf, spansPer)
			}
			if err := f.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			shutdown(t, f, 5*time.Second)
			if got, want := b.spanCount(), requests*spansPer; got != want {
				t.Errorf("backend got %d spans, want %d", got, want)
			}
			if diff := cmp.Diff(f.counts(), counts{Sent: requests * spansPer, Dropped: map[string]int{}}); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
		})
	}
}

// TestEverySpanIsCountedOnce forwards from several goroutines while Shutdown
// runs: each span ends up sent or dropped, never both, never neither.
func TestEverySpanIsCountedOnce(t *testing.T) {
	b := startBackend(t, &backend{}, "", "")
	cfg := testConfig(ProtocolGRPC, b.grpcAddr)
	body := encode(t, traces(1, 3, 0), Protobuf)
	cfg.QueueBytes = int64(20 * len(body))
	f := newForwarder(t, cfg)
	const callers, perCaller = 4, 300
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range perCaller {
				f.Forward(body, Protobuf, 3)
			}
		})
	}
	waitFor(t, "some spans sent", func() bool { return f.counts().Sent > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = f.Shutdown(ctx)
	wg.Wait()
	c := f.counts()
	total := c.Sent
	for _, n := range c.Dropped {
		total += n
	}
	if total != callers*perCaller*3 {
		t.Errorf("sent %d + dropped %v = %d spans, want the %d forwarded", c.Sent, c.Dropped, total, callers*perCaller*3)
	}
	if got := b.spanCount(); got != c.Sent {
		t.Errorf("backend got %d spans, forwarder counts %d sent", got, c.Sent)
	}
}
