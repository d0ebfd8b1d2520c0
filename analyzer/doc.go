// Package analyzer turns the spans of a CQRS + event-sourced system into
// command-to-projection lag and projection consistency metrics.
//
// It works in two steps with a small value type, Fact, between them, so that
// the steps can run in different processes:
//
//  1. Resolver: spans -> facts. It classifies each span (command, append,
//     project, query or ignored) and resolves, inside one trace, which command
//     span is the ancestor of each append span.
//  2. Joiner: facts -> joins by event id -> metrics. It matches projection
//     facts to the events they project, whatever their trace, observes lag and
//     stage durations, and declares events unprojected when an expected
//     projection does not show up within the join deadline.
//
// Analyzer wires both for one process and implements the collector's consumer.
package analyzer
