// Package analyzer turns the spans of a CQRS + event-sourced system into
// command-to-projection lag and projection consistency metrics.
//
// It works in two steps with a small value type, Fact, between them, so that
// the steps can run in different processes:
//
//  1. Resolver (NewResolver): spans -> facts. It classifies each span
//     (command, append, project, query or ignored: Config.Rules first, then
//     the span conventions) and resolves, inside one trace, which command
//     span is the ancestor of each append span and which event a consumer
//     span without event id projects (that of its producer span; a link to
//     another trace is resolved in that trace's shard). It recognises
//     retried spans by (trace id, span id). Its state is trace-local:
//     shard it across processes by trace id, and route a linking consumer
//     span to the process of the trace it links to.
//  2. Joiner (NewJoiner): facts -> joins by event id -> metrics. It matches
//     projection facts to the events they project, whatever their trace,
//     observes lag and stage durations, and declares events unprojected when
//     an expected projection does not show up within the join deadline. It
//     owns the cqrs_* metrics: shard it across processes by event id.
//
// Each is sharded inside the process and locks only its own shards; both are
// safe for concurrent use. Analyzer runs one of each in one process, passing
// a request's facts from one to the other without copying them, and
// implements the collector's consumer. Its Summary reads the metrics they
// expose.
//
// Both read a request as a spanbatch.Batch, what the analysis reads of it
// in flat slices (Analyzer.ConsumeBatch, Resolver.ResolveBatch), as the
// collector's selective decoder makes it; the pdata variants
// (ConsumeTraces, Resolve) convert pdata into one with
// spanbatch.Batch.FromTraces, keeping what Config.Reads names
// (Selection.Filter).
//
// Explain says, span by span, what the analysis makes of a request and why,
// for `lagscope explain`; it is not on the analysis path.
package analyzer
