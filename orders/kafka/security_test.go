package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lagscope/lagscope/kafkaconn/kafkaconntest"
	"github.com/lagscope/lagscope/orders"
	okafka "github.com/lagscope/lagscope/orders/kafka"
)

// secureConfig is a Config for the secure cluster c (its CA and client
// certificate; SASL with mechanism as its user, the right password or not).
// The test's cluster comes from lagscope's kafkaconntest; the order system's
// own code knows nothing of lagscope.
func secureConfig(c *kafkaconntest.Cluster, mechanism string, right bool) okafka.Config {
	lc := c.Config(true, true, mechanism, right)
	cfg := okafka.DefaultConfig()
	cfg.Brokers = []string{c.Addr}
	cfg.PollInterval, cfg.MaxWait = 10*time.Millisecond, 50*time.Millisecond
	cfg.TLS = okafka.TLSConfig{CAFile: lc.TLS.CAFile, CertFile: lc.TLS.CertFile, KeyFile: lc.TLS.KeyFile}
	cfg.SASL = okafka.SASLConfig{Mechanism: lc.SASL.Mechanism, Username: lc.SASL.Username, PasswordFile: lc.SASL.PasswordFile}
	return cfg
}

// TestBusOverTLSAndSASL relays events and projects them through brokers
// that want mutual TLS and SASL, with each mechanism; a wrong password
// fails EnsureTopic at once, naming the broker and the mechanism.
func TestBusOverTLSAndSASL(t *testing.T) {
	for _, mech := range []string{okafka.MechanismPlain, okafka.MechanismSCRAMSHA256, okafka.MechanismSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			c := kafkaconntest.Start(t, kafkaconntest.Options{ClientCerts: true, SASL: true})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := okafka.EnsureTopic(ctx, secureConfig(c, mech, false))
			if err == nil || !strings.Contains(err.Error(), c.Addr) || !strings.Contains(err.Error(), "SASL "+mech) {
				t.Errorf("EnsureTopic with a wrong password: %v, want an error naming %s and %s", err, c.Addr, mech)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("EnsureTopic took %v to fail", took)
			}

			cfg := secureConfig(c, mech, true)
			if err := okafka.EnsureTopic(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			db := openDB(t)
			appendOrders(t, db, 0, 5)
			relay := startRelay(t, cfg, db, db)
			defer shutdown(t, relay)
			r, f := startProjector(t, cfg, db, db)
			defer func() {
				shutdown(t, r)
				if err := f.Close(); err != nil {
					t.Error(err)
				}
			}()
			waitFor(t, "5 orders projected over TLS and SASL", func() (bool, string) {
				sum, err := db.Summary(context.Background())
				return err == nil && sum.Paid == 5, fmt.Sprintf("summary %+v, err %v", sum, err)
			})
			sum, err := db.Summary(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(sum, orders.Summary{Orders: 5, Paid: 5, Revenue: 500}); diff != "" {
				t.Errorf("sales summary (-got +want):\n%s", diff)
			}
		})
	}
}

func TestSecurityConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*okafka.Config)
		ok   bool
	}{
		{"plaintext", func(*okafka.Config) {}, true},
		{"cert without key", func(c *okafka.Config) { c.TLS.CertFile = "c.crt" }, false},
		{"unknown mechanism", func(c *okafka.Config) {
			c.SASL = okafka.SASLConfig{Mechanism: "GSSAPI", Username: "u", PasswordFile: "p"}
		}, false},
		{"no password file", func(c *okafka.Config) { c.SASL = okafka.SASLConfig{Mechanism: "PLAIN", Username: "u"} }, false},
		{"user without mechanism", func(c *okafka.Config) { c.SASL.Username = "u" }, false},
		{"scram", func(c *okafka.Config) {
			c.SASL = okafka.SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "u", PasswordFile: "p"}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := okafka.DefaultConfig()
			c.Brokers = []string{"127.0.0.1:9092"}
			tt.mut(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %t", err, tt.ok)
			}
		})
	}
}
