package collector

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// teeRecorder is a Tee that keeps copies of what it was given.
type teeRecorder struct {
	mu     sync.Mutex
	bodies [][]byte
	json   []bool
	spans  []int
}

func (r *teeRecorder) Forward(body []byte, json bool, spans int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = append(r.bodies, bytes.Clone(body))
	r.json = append(r.json, json)
	r.spans = append(r.spans, spans)
	return true
}

// TestTee checks that every consumed request's original bytes reach the Tee,
// over both transports and encodings, invalid spans included (the backend
// gets them unchanged), and that a request the consumer refused does not
// (its client retries it).
func TestTee(t *testing.T) {
	td := ptrace.NewTraces()
	spans := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
	for i := range 3 {
		s := spans.AppendEmpty()
		s.SetTraceID(pcommon.TraceID{1})
		if i < 2 {
			s.SetSpanID(pcommon.SpanID{byte(i + 1)}) // the third has no span id
		}
		s.SetName("s")
	}
	req := ptraceotlp.NewExportRequestFromTraces(td)
	pb, err := req.MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	js, err := req.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var refuse bool
	var mu sync.Mutex
	next := consumerFunc(func(context.Context, ptrace.Traces) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			return errors.New("not now")
		}
		return nil
	})
	r, err := New(testConfig(), next, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	tee := &teeRecorder{}
	r.SetTee(tee)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown(context.Background())
	conn, err := grpc.NewClient(r.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := ptraceotlp.NewGRPCClient(conn).Export(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		contentType string
		body        []byte
	}{{"application/x-protobuf", pb}, {"application/json", js}} {
		resp, err := http.Post("http://"+r.HTTPAddr().String()+tracesPath, c.contentType, bytes.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", c.contentType, resp.StatusCode)
		}
	}
	mu.Lock()
	refuse = true
	mu.Unlock()
	if resp, err := http.Post("http://"+r.HTTPAddr().String()+tracesPath, "application/x-protobuf", bytes.NewReader(pb)); err == nil {
		resp.Body.Close()
	}

	tee.mu.Lock()
	defer tee.mu.Unlock()
	if len(tee.bodies) != 3 {
		t.Fatalf("the tee got %d requests, want 3 (gRPC, HTTP protobuf, HTTP JSON; not the refused one)", len(tee.bodies))
	}
	for i, want := range [][]byte{pb, pb, js} {
		if !bytes.Equal(tee.bodies[i], want) {
			t.Errorf("request %d: the tee got other bytes than were sent", i)
		}
		if tee.json[i] != (i == 2) || tee.spans[i] != 3 {
			t.Errorf("request %d: json %v, spans %d; want %v, 3", i, tee.json[i], tee.spans[i], i == 2)
		}
	}
}
