package collector

// Field numbers of the OTLP trace protobuf messages, named after the
// messages and fields of opentelemetry-proto
// (opentelemetry/proto/collector/trace/v1/trace_service.proto,
// trace/v1/trace.proto, resource/v1/resource.proto, common/v1/common.proto),
// each with its declaration. The pre-scan (limits.go) and the selective
// decoder (lazy.go) read the wire format with these.
const (
	// message ExportTraceServiceRequest
	exportTraceServiceRequestResourceSpans = 1 // repeated ResourceSpans resource_spans = 1

	// message ResourceSpans
	resourceSpansResource   = 1 // Resource resource = 1
	resourceSpansScopeSpans = 2 // repeated ScopeSpans scope_spans = 2
	resourceSpansSchemaURL  = 3 // string schema_url = 3

	// message Resource
	resourceAttributes             = 1 // repeated KeyValue attributes = 1
	resourceDroppedAttributesCount = 2 // uint32 dropped_attributes_count = 2
	resourceEntityRefs             = 3 // repeated EntityRef entity_refs = 3

	// message EntityRef
	entityRefSchemaURL       = 1 // string schema_url = 1
	entityRefType            = 2 // string type = 2
	entityRefIDKeys          = 3 // repeated string id_keys = 3
	entityRefDescriptionKeys = 4 // repeated string description_keys = 4

	// message ScopeSpans
	scopeSpansScope     = 1 // InstrumentationScope scope = 1
	scopeSpansSpans     = 2 // repeated Span spans = 2
	scopeSpansSchemaURL = 3 // string schema_url = 3

	// message InstrumentationScope
	instrumentationScopeName                   = 1 // string name = 1
	instrumentationScopeVersion                = 2 // string version = 2
	instrumentationScopeAttributes             = 3 // repeated KeyValue attributes = 3
	instrumentationScopeDroppedAttributesCount = 4 // uint32 dropped_attributes_count = 4

	// message Span
	spanTraceID                = 1  // bytes trace_id = 1
	spanSpanID                 = 2  // bytes span_id = 2
	spanTraceState             = 3  // string trace_state = 3
	spanParentSpanID           = 4  // bytes parent_span_id = 4
	spanName                   = 5  // string name = 5
	spanKind                   = 6  // SpanKind kind = 6
	spanStartTimeUnixNano      = 7  // fixed64 start_time_unix_nano = 7
	spanEndTimeUnixNano        = 8  // fixed64 end_time_unix_nano = 8
	spanAttributes             = 9  // repeated KeyValue attributes = 9
	spanDroppedAttributesCount = 10 // uint32 dropped_attributes_count = 10
	spanEvents                 = 11 // repeated Event events = 11
	spanDroppedEventsCount     = 12 // uint32 dropped_events_count = 12
	spanLinks                  = 13 // repeated Link links = 13
	spanDroppedLinksCount      = 14 // uint32 dropped_links_count = 14
	spanStatus                 = 15 // Status status = 15
	spanFlags                  = 16 // fixed32 flags = 16

	// message Span.Event
	eventTimeUnixNano           = 1 // fixed64 time_unix_nano = 1
	eventName                   = 2 // string name = 2
	eventAttributes             = 3 // repeated KeyValue attributes = 3
	eventDroppedAttributesCount = 4 // uint32 dropped_attributes_count = 4

	// message Span.Link
	linkTraceID                = 1 // bytes trace_id = 1
	linkSpanID                 = 2 // bytes span_id = 2
	linkTraceState             = 3 // string trace_state = 3
	linkAttributes             = 4 // repeated KeyValue attributes = 4
	linkDroppedAttributesCount = 5 // uint32 dropped_attributes_count = 5
	linkFlags                  = 6 // fixed32 flags = 6

	// message Status (field 1 is reserved: the deprecated code)
	statusMessage = 2 // string message = 2
	statusCode    = 3 // StatusCode code = 3

	// message KeyValue
	keyValueKey   = 1 // string key = 1
	keyValueValue = 2 // AnyValue value = 2

	// message AnyValue, oneof value
	anyValueStringValue = 1 // string string_value = 1
	anyValueBoolValue   = 2 // bool bool_value = 2
	anyValueIntValue    = 3 // int64 int_value = 3
	anyValueDoubleValue = 4 // double double_value = 4
	anyValueArrayValue  = 5 // ArrayValue array_value = 5
	anyValueKvlistValue = 6 // KeyValueList kvlist_value = 6
	anyValueBytesValue  = 7 // bytes bytes_value = 7

	// message ArrayValue
	arrayValueValues = 1 // repeated AnyValue values = 1

	// message KeyValueList
	keyValueListValues = 1 // repeated KeyValue values = 1
)
