-- The event store: one append-only table. position is the global order; it
-- grows in commit order because appends are serialised (see store.go).
CREATE TABLE events (
	position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_id       text   NOT NULL UNIQUE,
	aggregate_type text   NOT NULL,
	aggregate_id   text   NOT NULL,
	version        bigint NOT NULL CHECK (version > 0),
	type           text   NOT NULL,
	-- json, not jsonb: the payload is returned byte for byte as written.
	data           json   NOT NULL,
	-- W3C trace context (traceparent, tracestate) of the command.
	metadata       jsonb  NOT NULL DEFAULT '{}',
	-- Unix nanoseconds: timestamptz would round to microseconds.
	recorded_at    bigint NOT NULL,
	CONSTRAINT events_stream_version UNIQUE (aggregate_id, version)
);
