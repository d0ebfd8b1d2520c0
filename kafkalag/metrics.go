package kafkalag

import (
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// skipReason names why a group, topic or partition was left out of the
// metrics; its value is the label of lagscope_kafka_lag_skipped_total.
type skipReason uint8

const (
	skipMaxGroups skipReason = iota
	skipMaxTopics
	skipMaxPartitions
	skipInvalidName
	numSkipReasons
)

func (r skipReason) String() string {
	return [...]string{"max_groups", "max_topics", "max_partitions", "invalid_name"}[r]
}

// op names a broker request for lagscope_kafka_lag_errors_total.
type op uint8

const (
	opListGroups op = iota
	opDescribeGroups
	opOffsetFetch
	opMetadata
	opListOffsets
	opFetch
	numOps
)

func (o op) String() string {
	return [...]string{"list_groups", "describe_groups", "offset_fetch", "metadata", "list_offsets", "fetch"}[o]
}

// maxNameLen bounds a group or topic name before it becomes a label value;
// Kafka's own limit on topic names is 249.
const maxNameLen = 255

// checkName returns why name cannot be a label value, or "".
func checkName(name string) string {
	switch {
	case name == "":
		return "empty"
	case len(name) > maxNameLen:
		return "longer than " + strconv.Itoa(maxNameLen) + " bytes"
	case !utf8.ValidString(name):
		return "not valid UTF-8"
	}
	return ""
}

// partitionLag is what one round found of one partition of one group.
type partitionLag struct {
	group, topic string
	partition    int
	position     int64 // committed offset, or the log start if never committed
	end          int64
	lag          int64
}

// topicLag is the time lag of one group on one topic.
type topicLag struct {
	group, topic string
	seconds      float64
}

// snapshot is what the last round found; Collect reports it as it is, so a
// scrape never sees half a round.
type snapshot struct {
	partitions []partitionLag
	topics     []topicLag
}

// metrics is the Exporter's prometheus.Collector: the lag gauges, read from
// the last snapshot, and its own counters.
type metrics struct {
	offsetLag *prometheus.Desc
	timeLag   *prometheus.Desc
	committed *prometheus.Desc
	end       *prometheus.Desc

	skipped [numSkipReasons]prometheus.Counter
	errors  [numOps]prometheus.Counter
	self    []prometheus.Collector

	mu   sync.Mutex
	last snapshot
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	skipped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_kafka_lag_skipped_total",
		Help: "Consumer groups, topics and partitions left out of the offset lag metrics, per round, by reason.",
	}, []string{"reason"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_kafka_lag_errors_total",
		Help: "Failed broker requests of the offset lag exporter, by request; what they cover keeps its last values.",
	}, []string{"op"})
	m := &metrics{
		offsetLag: prometheus.NewDesc("cqrs_projection_offset_lag",
			"Messages a consumer group has not consumed yet: end offset minus committed offset (the log start where it never committed).",
			[]string{"group", "topic", "partition"}, nil),
		timeLag: prometheus.NewDesc("cqrs_projection_time_lag_seconds",
			"Age of the oldest message a consumer group has not consumed on a topic, from its timestamp; 0 when caught up.",
			[]string{"group", "topic"}, nil),
		committed: prometheus.NewDesc("cqrs_projection_committed_offset",
			"Offset a consumer group resumes from: its committed offset, or the log start where it never committed.",
			[]string{"group", "topic", "partition"}, nil),
		end: prometheus.NewDesc("cqrs_projection_end_offset",
			"Offset the next message written to a partition of a topic a consumer group reads will get.",
			[]string{"group", "topic", "partition"}, nil),
		self: []prometheus.Collector{skipped, errs},
	}
	for r := range numSkipReasons {
		m.skipped[r] = skipped.WithLabelValues(r.String())
	}
	for o := range numOps {
		m.errors[o] = errs.WithLabelValues(o.String())
	}
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.offsetLag
	ch <- m.timeLag
	ch <- m.committed
	ch <- m.end
	for _, c := range m.self {
		c.Describe(ch)
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	last := m.last
	m.mu.Unlock()
	for _, p := range last.partitions {
		part := strconv.Itoa(p.partition)
		ch <- prometheus.MustNewConstMetric(m.offsetLag, prometheus.GaugeValue, float64(p.lag), p.group, p.topic, part)
		ch <- prometheus.MustNewConstMetric(m.committed, prometheus.GaugeValue, float64(p.position), p.group, p.topic, part)
		ch <- prometheus.MustNewConstMetric(m.end, prometheus.GaugeValue, float64(p.end), p.group, p.topic, part)
	}
	for _, t := range last.topics {
		ch <- prometheus.MustNewConstMetric(m.timeLag, prometheus.GaugeValue, t.seconds, t.group, t.topic)
	}
	for _, c := range m.self {
		c.Collect(ch)
	}
}

func (m *metrics) set(s snapshot) {
	m.mu.Lock()
	m.last = s
	m.mu.Unlock()
}

func (m *metrics) snapshot() snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}
