package kafkalag

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/lagscope/lagscope/kafkaconn"
)

// Config configures an Exporter. Its YAML keys sit in the file's top-level
// kafka section, next to collector.KafkaConfig's (inline both there); the
// zero value is not usable, start from DefaultConfig.
type Config struct {
	// Brokers are the host:port addresses of the brokers to bootstrap from.
	// It is kafka.brokers, declared by collector.KafkaConfig: lagscope serve
	// copies it here. Default empty, which New refuses.
	Brokers []string `yaml:"-"`

	// Conn is how the exporter connects to Brokers (TLS, SASL). It is
	// kafka.tls.* and kafka.sasl.*, declared by collector.KafkaConfig:
	// lagscope serve copies it here. Default plaintext.
	Conn kafkaconn.Config `yaml:"-"`

	// Groups (kafka.lag_groups, flag --kafka.lag-groups, comma-separated)
	// are the consumer groups whose lag is exported. Default empty: every
	// group the cluster lists, up to MaxGroups.
	Groups []string `yaml:"lag_groups"`

	// Interval (kafka.lag_interval) is how often committed and end offsets
	// are read; a round that has not finished by then is cut. Default 15s,
	// Burrow's and kafka-lag-exporter's order of magnitude.
	Interval time.Duration `yaml:"lag_interval"`

	// MaxGroups (kafka.lag_max_groups) bounds the groups exported, the
	// first by name; the others are counted in
	// lagscope_kafka_lag_skipped_total{reason="max_groups"}. Default 50.
	MaxGroups int `yaml:"lag_max_groups"`

	// MaxTopics (kafka.lag_max_topics) bounds the topics exported per group,
	// the first by name; the others are counted under reason="max_topics".
	// Default 10.
	MaxTopics int `yaml:"lag_max_topics"`

	// MaxPartitions (kafka.lag_max_partitions) bounds the partitions
	// exported per topic, the lowest numbered; the others are counted under
	// reason="max_partitions". Default 64.
	MaxPartitions int `yaml:"lag_max_partitions"`
}

// DefaultConfig returns the configuration documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		Interval:      15 * time.Second,
		MaxGroups:     50,
		MaxTopics:     10,
		MaxPartitions: 64,
	}
}

// Validate reports every field that cannot be used, joined into one error.
// Empty Brokers is valid (the exporter is off); New refuses it.
func (c Config) Validate() error {
	var errs []error
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("kafka.brokers: %w", err))
		}
	}
	if err := c.Conn.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, g := range c.Groups {
		if reason := checkName(g); reason != "" {
			errs = append(errs, fmt.Errorf("kafka.lag_groups: group %q: %s", g, reason))
		}
	}
	if c.Interval < time.Second {
		errs = append(errs, fmt.Errorf("kafka.lag_interval must be at least 1s, got %v", c.Interval))
	}
	for _, p := range []struct {
		key string
		v   int
	}{
		{"kafka.lag_max_groups", c.MaxGroups},
		{"kafka.lag_max_topics", c.MaxTopics},
		{"kafka.lag_max_partitions", c.MaxPartitions},
	} {
		if p.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", p.key, p.v))
		}
	}
	return errors.Join(errs...)
}
