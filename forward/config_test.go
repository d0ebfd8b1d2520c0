package forward

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lagscope/lagscope/configfile"
)

func TestDefaultConfigIsValidAndOff(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if c.Enabled() {
		t.Error("DefaultConfig().Enabled() = true, want forwarding off")
	}
	if _, err := New(c, nil, nil); err == nil {
		t.Error("New(DefaultConfig()) succeeded without an endpoint")
	}
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Config)
		wantKey string
	}{
		{"endpoint", func(c *Config) { c.Endpoint = "jaeger" }, "forward.endpoint"},
		{"protocol", func(c *Config) { c.Protocol = "thrift" }, "forward.protocol"},
		{"compression", func(c *Config) { c.Compression = "zstd" }, "forward.compression"},
		{"path", func(c *Config) { c.Path = "v1/traces" }, "forward.path"},
		{"header", func(c *Config) { c.Headers = map[string]string{"bad name": "x"} }, "forward.headers"},
		{"key file", func(c *Config) { c.TLS.CertFile = "client.pem" }, "forward.tls.key_file"},
		{"queue", func(c *Config) { c.QueueBytes = 0 }, "forward.queue_bytes"},
		{"concurrency", func(c *Config) { c.Concurrency = 0 }, "forward.concurrency"},
		{"timeout", func(c *Config) { c.Timeout = 0 }, "forward.timeout"},
		{"initial interval", func(c *Config) { c.Retry.InitialInterval = 0 }, "forward.retry.initial_interval"},
		{"max interval", func(c *Config) { c.Retry.MaxInterval = time.Millisecond }, "forward.retry.max_interval"},
		{"max elapsed", func(c *Config) { c.Retry.MaxElapsedTime = -time.Second }, "forward.retry.max_elapsed_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Endpoint = "localhost:4317"
			tt.modify(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			// The message is the user's only pointer to the setting to fix.
			if !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("Validate() = %q, want it to name %s", err, tt.wantKey)
			}
		})
	}
}

func TestConfigDecodesFromYAML(t *testing.T) {
	doc := `
forward:
  endpoint: tempo:4317
  protocol: http
  path: /otlp/v1/traces
  compression: gzip
  headers:
    X-Scope-OrgID: tenant-1
  tls:
    ca_file: /etc/lagscope/ca.pem
    server_name: tempo.internal
  queue_bytes: 1048576
  concurrency: 2
  timeout: 3s
  retry:
    initial_interval: 1s
    max_interval: 10s
    max_elapsed_time: 1m
`
	var got struct {
		Forward Config `yaml:"forward"`
	}
	got.Forward = DefaultConfig()
	if err := configfile.Decode([]byte(doc), &got); err != nil {
		t.Fatal(err)
	}
	want := Config{
		Endpoint: "tempo:4317", Protocol: "http", Path: "/otlp/v1/traces", Compression: "gzip",
		Headers:     map[string]string{"X-Scope-OrgID": "tenant-1"},
		TLS:         TLSConfig{CAFile: "/etc/lagscope/ca.pem", ServerName: "tempo.internal"},
		QueueBytes:  1 << 20,
		Concurrency: 2,
		Timeout:     3 * time.Second,
		Retry:       RetryConfig{InitialInterval: time.Second, MaxInterval: 10 * time.Second, MaxElapsedTime: time.Minute},
	}
	if diff := cmp.Diff(got.Forward, want); diff != "" {
		t.Errorf("decoded (-got +want):\n%s", diff)
	}
	if err := got.Forward.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	if !got.Forward.TLS.on() {
		t.Error("a ca_file does not turn TLS on")
	}
}
