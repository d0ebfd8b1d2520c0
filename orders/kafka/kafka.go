// Package kafka is the order system's event bus on Kafka
// (github.com/segmentio/kafka-go): a transactional-outbox Relay that
// publishes the events committed to an orders.Store to a topic, and a Feed
// from which a projector (orders/projection) consumes them with a consumer
// group per projection.
//
// Guarantees, as documented in orders/README.md:
//
//   - Relay: events are published in store position order, keyed by
//     aggregate id, from the relay's checkpoint (the position published up
//     to), which is kept in the store's checkpoints (Views.Apply under
//     CheckpointName) and moved only after the broker acknowledged the
//     write (acks=all). A restart resumes there: nothing is lost or
//     reordered per aggregate; after a crash between a write and its
//     checkpoint the events of that write are published again
//     (at-least-once).
//   - Feed: offsets are committed only after the read-model transaction
//     that applied the events (Committed), so a projector that dies before
//     it commits gets them again; the projector's checkpoint (the store
//     position in the message) skips what the read model already has, so
//     a redelivery or a re-publication changes nothing.
//   - The topic has one partition: the read models' checkpoint is one
//     store position per projection, which orders a projection's events
//     only when it reads them in store order. Feed refuses a topic with
//     more.
//
// Both are safe for use by one goroutine each (a Feed by its projector);
// Relay's Stats is safe for concurrent use.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// DefaultTopic is the topic events are relayed to by default.
const DefaultTopic = "orders.events"

// Header names of a relayed event's message. The value is the event as
// JSON (see Message).
const (
	// HeaderTraceparent and HeaderTracestate carry the W3C trace context
	// of the send span, a child of the context in the event's metadata.
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
	// HeaderEventID is the event id (orders.Event.ID).
	HeaderEventID = "event-id"
	// HeaderEventType is the event type, e.g. "OrderCreated".
	HeaderEventType = "event-type"
	// HeaderPosition is the event's global store position, in decimal.
	HeaderPosition = "store-position"
	// HeaderContentType is "application/json".
	HeaderContentType = "content-type"
)

// Config configures a Relay and a Feed.
type Config struct {
	// Brokers are the bootstrap brokers, host:port each. Required.
	Brokers []string `yaml:"brokers"`
	// Topic is the topic events are relayed to and consumed from; created
	// with one partition if missing. Default DefaultTopic ("orders.events").
	Topic string `yaml:"topic"`
	// ReplicationFactor of the topic when the relay or a feed creates it.
	// Default -1: the broker's default.replication.factor (CreateTopics v4,
	// Kafka 2.4 and later); set it for older brokers.
	ReplicationFactor int `yaml:"replication_factor"`
	// BatchSize is how many events the relay reads from the store and
	// writes in one produce request at most. Default 100.
	BatchSize int `yaml:"batch_size"`
	// PollInterval is how often the relay reads the store when no append
	// in this process woke it, and how long it waits after an error.
	// Default 100ms.
	PollInterval time.Duration `yaml:"poll_interval"`
	// MaxWait is how long a fetch waits at the broker for new messages.
	// Default 250ms.
	MaxWait time.Duration `yaml:"max_wait"`
	// TLS and SASL are how the relay and the feeds connect (flags
	// --kafka.tls.* and --kafka.sasl.*, named as lagscope's). Default
	// plaintext without SASL.
	TLS  TLSConfig  `yaml:"tls"`
	SASL SASLConfig `yaml:"sasl"`
}

// DefaultConfig returns the default configuration (without brokers).
func DefaultConfig() Config {
	return Config{
		Topic:             DefaultTopic,
		ReplicationFactor: -1,
		BatchSize:         100,
		PollInterval:      100 * time.Millisecond,
		MaxWait:           250 * time.Millisecond,
	}
}

// ParseBrokers splits a comma-separated broker list, dropping blanks.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Validate reports a missing broker or a bad setting.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka: no brokers")
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			return fmt.Errorf("kafka: broker %q: want host:port", b)
		}
	}
	if c.BatchSize < 0 || c.PollInterval < 0 || c.MaxWait < 0 {
		return errors.New("kafka: batch size, poll interval and max wait must not be negative")
	}
	return c.validateSecurity()
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Topic == "" {
		c.Topic = d.Topic
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = d.ReplicationFactor
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.MaxWait == 0 {
		c.MaxWait = d.MaxWait
	}
	return c
}

// EnsureTopic creates cfg.Topic with one partition if it does not exist,
// and reports an error if it has more than one (see the package comment).
// It connects first with cfg's TLS and SASL: brokers that refuse them give
// an error naming the broker and the mechanism.
func EnsureTopic(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	sec, err := newSecurity(cfg)
	if err != nil {
		return err
	}
	if err := sec.check(ctx, cfg.Brokers); err != nil {
		return err
	}
	// An own transport, closed on return: the default one keeps
	// connections (and goroutines) for the life of the process.
	tr := sec.transport()
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Timeout: 10 * time.Second, Transport: tr}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: cfg.Topic, NumPartitions: 1, ReplicationFactor: cfg.ReplicationFactor,
	}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", cfg.Topic, err)
	}
	if err := resp.Errors[cfg.Topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", cfg.Topic, err)
	}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.Topic}})
	if err != nil {
		return fmt.Errorf("read metadata of topic %s: %w", cfg.Topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != cfg.Topic {
			continue
		}
		if t.Error != nil {
			return fmt.Errorf("read metadata of topic %s: %w", cfg.Topic, t.Error)
		}
		if n := len(t.Partitions); n != 1 {
			return fmt.Errorf("topic %s has %d partitions, want 1: a projection's checkpoint is one store position, which needs the events in store order", cfg.Topic, n)
		}
		return nil
	}
	return fmt.Errorf("topic %s: not in the metadata", cfg.Topic)
}
