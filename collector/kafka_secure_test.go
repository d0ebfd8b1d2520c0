package collector

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/lagscope/lagscope/kafkaconn"
	"github.com/lagscope/lagscope/kafkaconn/kafkaconntest"
)

// TestKafkaOverTLSAndSASL consumes OTLP messages from brokers that want TLS
// and SASL, with each mechanism: the right credentials consume; wrong ones
// fail Start at once, naming the broker and the mechanism.
func TestKafkaOverTLSAndSASL(t *testing.T) {
	for _, mech := range []string{kafkaconn.MechanismPlain, kafkaconn.MechanismSCRAMSHA256, kafkaconn.MechanismSCRAMSHA512} {
		for _, right := range []bool{true, false} {
			name := mech + " right"
			if !right {
				name = mech + " wrong"
			}
			t.Run(name, func(t *testing.T) {
				c := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: 1, Topics: []string{kafkaTestTopic}})
				conn := c.Config(true, false, mech, right)
				next := &traceCounter{}
				r, err := New(testConfig(), next, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				cfg := DefaultKafkaConfig()
				cfg.Brokers, cfg.Conn = []string{c.Addr}, conn
				k, err := NewKafka(cfg, r, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				err = k.Start(context.Background())
				if !right {
					if !errors.Is(err, kafkaconn.ErrAuthentication) || !strings.Contains(err.Error(), c.Addr) || !strings.Contains(err.Error(), mech) {
						t.Fatalf("Start with a wrong password: %v, want ErrAuthentication naming %s and %s", err, c.Addr, mech)
					}
					return
				}
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				t.Cleanup(func() { shutdownKafka(t, k) })
				o := kafkaconntest.MustOptions(t, conn)
				tr := o.Transport()
				defer tr.CloseIdleConnections()
				id := pcommon.TraceID{0xd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
				produce(t, c.Addr, tr, kafkaMessage(t, false, id, "POST /orders", "orders.append"))
				waitFor(t, "2 spans consumed over TLS and SASL", func() bool { return next.total() >= 2 })
			})
		}
	}
}
