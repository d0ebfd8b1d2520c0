package main

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestServeForwards runs a lagscope that forwards to a second lagscope (a
// real OTLP server), over each protocol: every span sent to the first
// arrives at the second once, and both analyse it. Then, with the backend
// gone, the first still accepts and analyses at once, and queues what it
// cannot forward.
func TestServeForwards(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			backend := startServer(t, nil)
			endpoint := backend.GRPCAddr().String()
			if protocol == "http" {
				endpoint = backend.HTTPAddr().String()
			}
			front := startServer(t, func(c *Config) {
				c.Forward.Endpoint, c.Forward.Protocol = endpoint, protocol
			})
			send := exporterTo(t, front.GRPCAddr().String())
			const requests = 5
			for i := range requests {
				send(normalTraces(2000 + i))
			}
			waitFor(t, 10*time.Second, "every span forwarded", func() (bool, string) {
				got := value(scrape(t, backend.MetricsURL()), "lagscope_received_spans_total", nil)
				sent := value(scrape(t, front.MetricsURL()), "lagscope_forward_sent_spans_total", nil)
				return got == 4*requests && sent == 4*requests, fmt.Sprintf("backend received %v, front sent %v", got, sent)
			})
			for _, s := range []*Server{front, backend} {
				if got := value(scrape(t, s.MetricsURL()), "cqrs_events_appended_total", nil); got != requests {
					t.Errorf("%s: %v events appended, want %d", s.MetricsURL(), got, requests)
				}
			}
		})
	}
	t.Run("backend down", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close() // nothing listens there now
		front := startServer(t, func(c *Config) { c.Forward.Endpoint = dead })
		send := exporterTo(t, front.GRPCAddr().String())
		start := time.Now()
		send(normalTraces(3000))
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("an export took %v with the backend down", took)
		}
		waitFor(t, 10*time.Second, "the request queued for forwarding", func() (bool, string) {
			mfs := scrape(t, front.MetricsURL())
			q := value(mfs, "lagscope_forward_queue_requests", nil)
			a := value(mfs, "cqrs_events_appended_total", nil)
			return q == 1 && a == 1, fmt.Sprintf("queued %v, appended %v", q, a)
		})
	})
}

// normalTraces is one ordinary CQRS chain (command, append, projection,
// query) of trace seq.
func normalTraces(seq int) ptraceotlp.ExportRequest {
	h := hostileSpan{eventType: "OrderCreated", aggType: "Order", command: "CreateOrder", projection: "orders_view",
		service: "orders", query: "GetOrder", version: "1"}
	return ptraceotlp.NewExportRequestFromTraces(h.traces(seq))
}

// exporterTo returns a function that exports a request over OTLP/gRPC to
// addr, failing the test on an error.
func exporterTo(t *testing.T, addr string) func(ptraceotlp.ExportRequest) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := ptraceotlp.NewGRPCClient(conn)
	return func(req ptraceotlp.ExportRequest) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := client.Export(ctx, req); err != nil {
			t.Fatalf("export: %v", err)
		}
	}
}
