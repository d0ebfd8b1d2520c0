package kafkalag

import (
	"errors"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/lagscope/lagscope/kafkaconn"
	"github.com/lagscope/lagscope/kafkaconn/kafkaconntest"
)

// TestLagOverTLSAndSASL reads the lag of a group from brokers that want
// TLS and SCRAM: with the right password the lag is the unconsumed count;
// with a wrong one Poll fails with ErrAuthentication naming the mechanism.
func TestLagOverTLSAndSASL(t *testing.T) {
	kc := kafkaconntest.Start(t, kafkaconntest.Options{TLS: true, SASL: true, Partitions: 2, Topics: []string{topic}})
	right := kc.Config(true, false, kafkaconn.MechanismSCRAMSHA512, true)
	tr := kafkaconntest.MustOptions(t, right).Transport()
	t.Cleanup(tr.CloseIdleConnections)
	c := &cluster{addr: kc.Addr, client: &kafka.Client{Addr: kafka.TCP(kc.Addr), Transport: tr}, tr: tr}
	c.produce(t, 0, 5)
	c.commit(t, "projector", map[int]int64{0: 2})

	e, _ := newExporter(t, c, func(cfg *Config) { cfg.Conn = right; cfg.Groups = []string{"projector"} })
	if err := e.Poll(testContext(t)); err != nil {
		t.Fatalf("Poll with the right credentials: %v", err)
	}
	var lag int64 = -1
	for _, p := range e.metrics.snapshot().partitions {
		if p.group == "projector" && p.partition == 0 {
			lag = p.lag
		}
	}
	if lag != 3 {
		t.Errorf("offset lag of partition 0 = %d, want 3", lag)
	}

	wrong := kc.Config(true, false, kafkaconn.MechanismSCRAMSHA512, false)
	e, _ = newExporter(t, c, func(cfg *Config) { cfg.Conn = wrong; cfg.Groups = []string{"projector"} })
	err := e.Poll(testContext(t))
	if !errors.Is(err, kafkaconn.ErrAuthentication) || !strings.Contains(err.Error(), kafkaconn.MechanismSCRAMSHA512) || !strings.Contains(err.Error(), kc.Addr) {
		t.Errorf("Poll with a wrong password: %v, want ErrAuthentication naming %s and %s", err, kafkaconn.MechanismSCRAMSHA512, kc.Addr)
	}
}
