package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewTracerProviderHTTP(t *testing.T) {
	var (
		mu    sync.Mutex
		paths []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	tests := []struct {
		name     string
		endpoint string
	}{
		{name: "bare URL", endpoint: srv.URL},
		{name: "URL with path", endpoint: srv.URL + "/v1/traces"},
		{name: "host:port", endpoint: strings.TrimPrefix(srv.URL, "http://")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			paths = nil
			mu.Unlock()
			tp, err := telemetry.NewTracerProvider(context.Background(), telemetry.Config{Endpoint: tt.endpoint, Protocol: telemetry.ProtocolHTTP})
			if err != nil {
				t.Fatal(err)
			}
			_, span := tp.Tracer("test").Start(context.Background(), "x")
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tp.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown() error = %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != 1 || paths[0] != "/v1/traces" {
				t.Errorf("exporter posted to %v, want [/v1/traces]", paths)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, p := range []string{"", "grpc", "http"} {
		if err := (telemetry.Config{Protocol: p}).Validate(); err != nil {
			t.Errorf("Validate(%q) error = %v", p, err)
		}
	}
	if err := (telemetry.Config{Protocol: "udp"}).Validate(); err == nil {
		t.Error("Validate(udp) error = nil")
	}
}
