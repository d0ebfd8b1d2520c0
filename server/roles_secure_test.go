package server

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"

	"github.com/lagscope/lagscope/kafkaconn"
	"github.com/lagscope/lagscope/kafkaconn/kafkaconntest"
)

// TestRolesOverTLSAndSASL runs an ingest and a join instance against
// brokers that want TLS and SCRAM-SHA-256: the facts flow from one to the
// other and every one is applied. With a wrong password each role, and
// `all`, fails Start at once, naming the broker and the mechanism.
func TestRolesOverTLSAndSASL(t *testing.T) {
	kc := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: partitions, Topics: []string{tracesTopic, factsTopic}})
	secure := func(role string, right bool) Config {
		cfg := roleConfig(kc.Addr, role, "lagscope")
		cfg.Kafka.Conn = kc.Config(true, false, kafkaconn.MechanismSCRAMSHA256, right)
		return cfg
	}
	for _, role := range []string{RoleAll, RoleIngest, RoleJoin} {
		s, err := New(secure(role, false), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err = s.Start(ctx)
		cancel()
		if !errors.Is(err, kafkaconn.ErrAuthentication) || !strings.Contains(err.Error(), kc.Addr) || !strings.Contains(err.Error(), kafkaconn.MechanismSCRAMSHA256) {
			t.Errorf("role %s with a wrong password: Start = %v, want ErrAuthentication naming %s and %s", role, err, kc.Addr, kafkaconn.MechanismSCRAMSHA256)
		}
		stopRole(t, s)
	}

	st := &stages{t: t, addr: kc.Addr}
	st.ingests = append(st.ingests, startRole(t, secure(RoleIngest, true)))
	st.joins = append(st.joins, startRole(t, secure(RoleJoin, true)))
	msgs, spans := fixtureMessages(t, fixtures(t))
	tr := kafkaconntest.MustOptions(t, kc.Config(true, false, kafkaconn.MechanismSCRAMSHA256, true)).Transport()
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(kc.Addr), Topic: tracesTopic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce traces: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st.drained(spans)
	if got := sample(t, "lagscope_facts_applied_total", st.joinRegs()...); got == 0 {
		t.Error("the join role applied no fact over TLS and SASL")
	}
	if got := sample(t, "cqrs_events_appended_total", st.joinRegs()...); got == 0 {
		t.Error("the join role counted no append over TLS and SASL")
	}
}

// TestKafkaSecurityKeys reads kafka.tls.* and kafka.sasl.* from a config
// file into the one setting every Kafka client uses.
func TestKafkaSecurityKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lagscope.yaml")
	yaml := `kafka:
  brokers: [b1:9093]
  tls:
    ca_file: /ca.crt
    cert_file: /c.crt
    key_file: /c.key
    server_name: kafka.internal
    insecure_skip_verify: true
    enabled: true
  sasl:
    mechanism: SCRAM-SHA-512
    username: lagscope
    password_file: /pw
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := LoadConfigFile(path, &cfg); err != nil {
		t.Fatal(err)
	}
	want := kafkaconn.Config{
		TLS:  kafkaconn.TLSConfig{Enabled: true, CAFile: "/ca.crt", CertFile: "/c.crt", KeyFile: "/c.key", ServerName: "kafka.internal", InsecureSkipVerify: true},
		SASL: kafkaconn.SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "lagscope", PasswordFile: "/pw"},
	}
	if diff := cmp.Diff(want, cfg.Kafka.Conn); diff != "" {
		t.Errorf("kafka connection settings (-want +got):\n%s", diff)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	cfg.Kafka.Conn.SASL.Mechanism = "scram"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "kafka.sasl.mechanism") {
		t.Errorf("Validate of a bad mechanism: %v, want an error naming kafka.sasl.mechanism", err)
	}
}
