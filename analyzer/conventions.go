package analyzer

import (
	"slices"

	"github.com/lagscope/lagscope/spanbatch"
)

// Selection is what the analysis reads of an OTLP request besides the fields
// of a span it always reads (trace and span ids, parent span id, name, kind,
// start and end times, status code, the names of its events, the ids of
// its links, and its tracestate when that holds a sampling threshold,
// `th:`): the attributes it reads, and the span events whose attributes
// it reads. A receiver that decodes no more than this (the collector's
// selective decoder, collector.Config.Keep, whose Selection has the same
// fields so that a program converts one into the other) loses nothing the
// analysis uses.
type Selection struct {
	// ResourceAttributes are the keys of the resource attributes read.
	ResourceAttributes []string
	// SpanAttributes are the keys of the span attributes read.
	SpanAttributes []string
	// EventNames are the names of the span events whose attributes are
	// read; events of other names are not read at all.
	EventNames []string
	// EventAttributes are the keys of the attributes read of those events.
	EventAttributes []string
	// Values are the string attribute values the analysis compares with
	// (those of cqrs.operation and messaging.operation.type): a decoder may
	// share one copy of each instead of allocating one per span.
	Values []string
}

// Reads returns what an Analyzer built from c reads of a request. Each call
// returns new slices, which the caller may modify.
//
// The span conventions read a fixed set; Config.Rules add the span and
// resource attributes they match on and read fields from. Rules that do not
// compile add nothing (Validate reports them).
func (c Config) Reads() Selection {
	rs, _ := compileRules(c.Rules)
	span, res := rs.readKeys()
	resource := []string{attrServiceName}
	for _, k := range res {
		if !slices.Contains(resource, k) {
			resource = append(resource, k)
		}
	}
	spanKeys := slices.Clone(spanAttributeKeys)
	for _, k := range span {
		if !slices.Contains(spanKeys, k) {
			spanKeys = append(spanKeys, k)
		}
	}
	return Selection{
		ResourceAttributes: resource,
		SpanAttributes:     spanKeys,
		EventNames:         []string{eventNameCQRS},
		// An event's attributes are read as a span's are (spanAttrs.read).
		EventAttributes: slices.Clone(spanAttributeKeys),
		Values:          slices.Clone(comparedValues),
	}
}

// Filter returns the spanbatch.Filter that keeps what s names: a Batch made
// with it (spanbatch.Batch.FromTraces) holds everything of a request that
// an analysis whose Reads is s reads. It is safe for concurrent use.
func (s Selection) Filter() spanbatch.Filter {
	return spanbatch.NewKeys(s.ResourceAttributes, s.SpanAttributes, s.EventNames, s.EventAttributes)
}

// spanAttributeKeys are the keys spanAttrs.read reads, every one of them
// (TestReadsListsEveryKey checks this against its source).
var spanAttributeKeys = []string{
	attrOperation,
	attrCommandName,
	attrQueryName,
	attrEventID,
	attrEventType,
	attrAggregateType,
	attrAggregateID,
	attrVersion,
	attrProjection,

	attrAliasEventID,
	attrAliasEventIDU,
	attrAliasEventType,
	attrAliasEventTypeU,
	attrAliasEventAggID,
	attrAliasAggregateID,
	attrAliasAggregateIDU,
	attrAliasAggregateType,
	attrAliasVersion,
	attrAliasCommandType,
	attrAliasCommandName,
	attrAliasProjection,
	attrAliasProjectionName,

	attrMsgID,
	attrMsgOpType,
	attrMsgOpOld,
	attrMsgSystem,
	attrMsgDest,
	attrMsgGroup,
	attrMsgSubscription,
	attrMsgKafkaGroup,
	attrMsgKafkaGroupV0,
}

// comparedValues are the attribute values classify compares with.
var comparedValues = []string{
	opCommand, opAppend, opProject, opQuery,
	msgOpCreate, msgOpSend, msgOpPublish, msgOpProcess, msgOpDeliver, msgOpReceive, msgOpSettle,
}
