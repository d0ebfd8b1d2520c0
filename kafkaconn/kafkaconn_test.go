package kafkaconn_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/lagscope/lagscope/kafkaconn"
	"github.com/lagscope/lagscope/kafkaconn/kafkaconntest"
)

const topic = "secured"

// roundTrip produces a message with a Writer on o's Transport and consumes
// it back in a consumer group with a Reader on o's Dialer.
func roundTrip(t *testing.T, addr string, o *kafkaconn.Options, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr := o.Transport()
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Transport: tr, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte(group)}); err != nil {
		t.Fatalf("produce with %s: %v", o, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, GroupID: group, Topic: topic, Dialer: o.Dialer(),
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("consume with %s: %v", o, err)
		}
		if string(m.Value) == group {
			return
		}
	}
}

// TestSecureClusters connects to brokers with TLS, mutual TLS and each SASL
// mechanism: the right credentials produce and consume; wrong ones fail
// Check at once with ErrAuthentication, naming the broker and the mechanism.
func TestSecureClusters(t *testing.T) {
	mechs := []string{kafkaconn.MechanismPlain, kafkaconn.MechanismSCRAMSHA256, kafkaconn.MechanismSCRAMSHA512}
	tests := []struct {
		name      string
		cluster   kafkaconntest.Options
		tls, cert bool
		mechanism string
		right     bool
		want      string // in the error of a refused client
	}{
		{name: "tls", cluster: kafkaconntest.Options{TLS: true}, tls: true, right: true},
		{name: "mtls", cluster: kafkaconntest.Options{ClientCerts: true}, cert: true, right: true},
		{name: "mtls without a client certificate", cluster: kafkaconntest.Options{ClientCerts: true}, tls: true, want: "TLS"},
		{name: "tls trusting other CAs", cluster: kafkaconntest.Options{TLS: true}, want: "TLS"},
	}
	for _, m := range mechs {
		tests = append(tests,
			struct {
				name      string
				cluster   kafkaconntest.Options
				tls, cert bool
				mechanism string
				right     bool
				want      string
			}{name: "sasl_plaintext " + m, cluster: kafkaconntest.Options{SASL: true}, mechanism: m, right: true},
			struct {
				name      string
				cluster   kafkaconntest.Options
				tls, cert bool
				mechanism string
				right     bool
				want      string
			}{name: "sasl_ssl " + m, cluster: kafkaconntest.Options{SASL: true, TLS: true}, tls: true, mechanism: m, right: true},
			struct {
				name      string
				cluster   kafkaconntest.Options
				tls, cert bool
				mechanism string
				right     bool
				want      string
			}{name: "sasl_ssl wrong password " + m, cluster: kafkaconntest.Options{SASL: true, TLS: true}, tls: true, mechanism: m, want: "SASL " + m},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cluster.Topics = []string{topic}
			c := kafkaconntest.Start(t, tt.cluster)
			cfg := c.Config(tt.tls, tt.cert, tt.mechanism, tt.right)
			if tt.name == "tls trusting other CAs" {
				cfg.TLS.Enabled = true // the system's roots
			}
			o := kafkaconntest.MustOptions(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			start := time.Now()
			err := o.Check(ctx, []string{c.Addr})
			if tt.right {
				if err != nil {
					t.Fatalf("Check with the right credentials: %v", err)
				}
				roundTrip(t, c.Addr, o, strings.ReplaceAll(tt.name, " ", "-"))
				return
			}
			if err == nil {
				t.Fatal("Check with wrong credentials succeeded")
			}
			if !errors.Is(err, kafkaconn.ErrAuthentication) {
				t.Errorf("Check: %v, not ErrAuthentication", err)
			}
			for _, s := range []string{c.Addr, tt.want} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Check: %q does not name %q", err, s)
				}
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Check took %v to refuse", took)
			}
		})
	}
}

// TestPasswordReadPerConnection rotates the password file between two
// connections: the second uses the new password with no restart.
func TestPasswordReadPerConnection(t *testing.T) {
	c := kafkaconntest.Start(t, kafkaconntest.Options{SASL: true})
	cfg := c.Config(false, false, kafkaconn.MechanismSCRAMSHA256, false)
	o := kafkaconntest.MustOptions(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := o.Check(ctx, []string{c.Addr}); !errors.Is(err, kafkaconn.ErrAuthentication) {
		t.Fatalf("Check with the wrong password: %v, want ErrAuthentication", err)
	}
	if err := os.WriteFile(cfg.SASL.PasswordFile, []byte(kafkaconntest.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.Check(ctx, []string{c.Addr}); err != nil {
		t.Fatalf("Check after the password file was fixed: %v", err)
	}
}

// TestCheckUnreachable tells an unreachable broker from a refusal.
func TestCheckUnreachable(t *testing.T) {
	o := kafkaconntest.MustOptions(t, kafkaconn.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := o.Check(ctx, []string{"127.0.0.1:1"})
	if err == nil || errors.Is(err, kafkaconn.ErrAuthentication) {
		t.Errorf("Check of a closed port: %v, want an error that is not ErrAuthentication", err)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte(" pw \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sasl := func(m, u, f string) kafkaconn.Config {
		return kafkaconn.Config{SASL: kafkaconn.SASLConfig{Mechanism: m, Username: u, PasswordFile: f}}
	}
	tests := []struct {
		name string
		cfg  kafkaconn.Config
		want string // "" for valid; else a word of the error
		desc string
	}{
		{name: "zero", desc: "plaintext"},
		{name: "tls on", cfg: kafkaconn.Config{TLS: kafkaconn.TLSConfig{Enabled: true}}, desc: "TLS"},
		{name: "server name means tls", cfg: kafkaconn.Config{TLS: kafkaconn.TLSConfig{ServerName: "kafka"}}, desc: "TLS"},
		{name: "cert without key", cfg: kafkaconn.Config{TLS: kafkaconn.TLSConfig{CertFile: pass}}, want: "kafka.tls.key_file"},
		{name: "missing ca", cfg: kafkaconn.Config{TLS: kafkaconn.TLSConfig{CAFile: filepath.Join(dir, "nope")}}, want: "kafka.tls.ca_file"},
		{name: "ca not pem", cfg: kafkaconn.Config{TLS: kafkaconn.TLSConfig{CAFile: pass}}, want: "no PEM"},
		{name: "scram", cfg: sasl("SCRAM-SHA-512", "u", pass), desc: "SASL SCRAM-SHA-512 as u"},
		{name: "unknown mechanism", cfg: sasl("GSSAPI", "u", pass), want: "kafka.sasl.mechanism"},
		{name: "lower-case mechanism", cfg: sasl("plain", "u", pass), want: "kafka.sasl.mechanism"},
		{name: "no user", cfg: sasl("PLAIN", "", pass), want: "kafka.sasl.username"},
		{name: "no password file", cfg: sasl("PLAIN", "u", ""), want: "kafka.sasl.password_file"},
		{name: "missing password file", cfg: sasl("PLAIN", "u", filepath.Join(dir, "nope")), want: "kafka.sasl.password_file"},
		{name: "empty password", cfg: sasl("PLAIN", "u", empty), want: "empty"},
		{name: "user without mechanism", cfg: sasl("", "u", ""), want: "kafka.sasl.mechanism"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := kafkaconn.New(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if got := o.String(); got != tt.desc {
					t.Errorf("String() = %q, want %q", got, tt.desc)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// TestPlaintextToSecureListener names the likely cause when a plaintext
// client meets a TLS or SASL listener.
func TestPlaintextToSecureListener(t *testing.T) {
	for _, opts := range []kafkaconntest.Options{{TLS: true}, {SASL: true}} {
		c := kafkaconntest.Start(t, opts)
		o := kafkaconntest.MustOptions(t, kafkaconn.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := o.Check(ctx, []string{c.Addr})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "kafka.tls.*") {
			t.Errorf("%+v: Check = %v, want an error pointing at kafka.tls.* and kafka.sasl.*", opts, err)
		}
	}
}
