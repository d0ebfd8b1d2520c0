package kafka

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// wireEvent is the JSON value of a relayed event's message: the stored
// event, envelope and payload, with its position.
type wireEvent struct {
	ID            string            `json:"id"`
	AggregateType string            `json:"aggregate_type"`
	AggregateID   string            `json:"aggregate_id"`
	Version       int64             `json:"version"`
	Type          string            `json:"type"`
	Data          json.RawMessage   `json:"data"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	RecordedAt    time.Time         `json:"recorded_at"`
	Position      int64             `json:"position"`
}

// Message returns the message that relays e: key = aggregate id, value =
// the event as JSON, headers = trace context (traceCtx, as
// telemetry.Propagator wrote it: traceparent and tracestate by default,
// x-b3-* or b3 with OTEL_PROPAGATORS=b3multi or b3), event id, type and
// store position.
func Message(e orders.Event, traceCtx map[string]string) (kafka.Message, error) {
	v, err := json.Marshal(wireEvent{
		ID: e.ID, AggregateType: e.AggregateType, AggregateID: e.AggregateID, Version: e.Version,
		Type: e.Type, Data: e.Data, Metadata: e.Metadata, RecordedAt: e.RecordedAt, Position: e.Position,
	})
	if err != nil {
		return kafka.Message{}, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	h := make([]kafka.Header, 0, len(traceCtx)+4)
	for _, k := range slices.Sorted(maps.Keys(traceCtx)) { // in a stable order
		if s := traceCtx[k]; s != "" {
			h = append(h, kafka.Header{Key: k, Value: []byte(s)})
		}
	}
	h = append(h,
		kafka.Header{Key: HeaderEventID, Value: []byte(e.ID)},
		kafka.Header{Key: HeaderEventType, Value: []byte(e.Type)},
		kafka.Header{Key: HeaderPosition, Value: strconv.AppendInt(nil, e.Position, 10)},
		kafka.Header{Key: HeaderContentType, Value: []byte("application/json")},
	)
	return kafka.Message{Key: []byte(e.AggregateID), Value: v, Headers: h}, nil
}

// Event decodes a relayed event's message. Its Metadata is the message's
// trace context headers (the send span's), so that a consumer's span
// continues from the message; the event's own metadata, the append span's
// context, stays in the value.
func Event(m kafka.Message) (orders.Event, error) {
	var w wireEvent
	if err := json.Unmarshal(m.Value, &w); err != nil {
		return orders.Event{}, fmt.Errorf("decode message at offset %d: %w", m.Offset, err)
	}
	if w.ID == "" || w.Position <= 0 {
		return orders.Event{}, fmt.Errorf("decode message at offset %d: no event id or position", m.Offset)
	}
	md := map[string]string{}
	fields := telemetry.Propagator.Fields()
	for _, h := range m.Headers {
		if slices.Contains(fields, h.Key) || h.Key == HeaderTraceparent || h.Key == HeaderTracestate {
			md[h.Key] = string(h.Value)
		}
	}
	if len(md) == 0 {
		md = w.Metadata
	}
	return orders.Event{
		ID: w.ID, AggregateType: w.AggregateType, AggregateID: w.AggregateID, Version: w.Version,
		Type: w.Type, Data: w.Data, Metadata: md, RecordedAt: w.RecordedAt, Position: w.Position,
	}, nil
}
