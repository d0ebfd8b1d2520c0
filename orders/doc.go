// Package orders is the domain of lagscope's reference CQRS and event-sourced
// order system: the Order aggregate, its commands and events, the errors
// callers branch on, and the interfaces (Store, Views) that storage
// implementations in subpackages satisfy.
//
// The package holds types, pure decision functions and interfaces only; it
// starts no goroutines and does no I/O. Implementations live in subpackages
// named after what they wrap: orders/sqlite for storage, orders/projection for
// the asynchronous projectors, orders/command for the command handler,
// orders/httpapi for the HTTP edge, orders/kafka for the Kafka event bus
// (outbox relay and consumer-group feeds), orders/app for process roles and
// orders/load for the load generator.
package orders
