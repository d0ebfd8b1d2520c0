package app

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/orders/command"
	"github.com/lagscope/lagscope/orders/kafka"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// Role selects what one process of the order system does.
type Role string

// Roles. RoleAll runs everything in one process.
const (
	RoleAll       Role = "all"
	RoleCommand   Role = "command"
	RoleProjector Role = "projector"
	RoleQuery     Role = "query"
)

// ServiceName returns the default service.name of a role: "orders" for all,
// else "orders-<role>" (e.g. "orders-projector").
func (r Role) ServiceName() string {
	if r == RoleAll || r == "" {
		return "orders"
	}
	return "orders-" + string(r)
}

func (r Role) commands() bool   { return r == RoleAll || r == RoleCommand }
func (r Role) queries() bool    { return r == RoleAll || r == RoleQuery }
func (r Role) projectors() bool { return r == RoleAll || r == RoleProjector }

// Bus selects how events travel from the store to the projectors.
type Bus string

// Buses. BusStore is the default.
const (
	// BusStore: projectors read the store itself (in-process wake-ups,
	// PostgreSQL notifications, polling).
	BusStore Bus = "store"
	// BusKafka: the command side's outbox relay publishes the store's
	// events to a Kafka topic and projectors consume it, one consumer group
	// per projection (see orders/kafka).
	BusKafka Bus = "kafka"
)

// Config configures an App.
type Config struct {
	// Store is the event store: "sqlite:PATH" for a file shared by local
	// processes, "sqlite::memory:" for a private in-memory database (one
	// process only), or a PostgreSQL URL, "postgres://..." or
	// "postgresql://..." (see orders/postgres: search_path selects the
	// schema, pool_max_conns the pool size), shared by processes on any
	// host. Default "sqlite:orders.db".
	Store string
	// Listen is the HTTP address, e.g. "127.0.0.1:8080"; port 0 picks a free
	// port (see App.Addr). Empty serves no HTTP (only useful for the projector
	// role). Default "127.0.0.1:8080".
	Listen string
	// Role is what this process does. Default RoleAll.
	Role Role
	// OTLP configures span export when TracerProvider is nil. Its ServiceName
	// defaults to Role.ServiceName(); an empty Endpoint exports nothing.
	OTLP telemetry.Config
	// TracerProvider, when set, is used instead of building one from OTLP.
	// The App flushes it on Shutdown (if it has ForceFlush) but does not shut
	// it down: its owner does. Default nil.
	TracerProvider trace.TracerProvider
	// Projection configures the projectors (projector and all roles),
	// including their fault knobs. Default projection.DefaultConfig().
	Projection projection.Config
	// Command configures the command handler. Default command.DefaultConfig().
	Command command.Config
	// Bus is how events reach the projectors. With BusKafka the command
	// and all roles run the outbox relay, and the projector and all roles
	// consume the topic. Default BusStore ("" is BusStore too).
	Bus Bus
	// Kafka configures the Kafka bus (brokers, topic); used with BusKafka
	// only. Default kafka.DefaultConfig() (no brokers: set them).
	Kafka kafka.Config
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{
		Store:      "sqlite:orders.db",
		Listen:     "127.0.0.1:8080",
		Role:       RoleAll,
		Projection: projection.DefaultConfig(),
		Command:    command.DefaultConfig(),
		Bus:        BusStore,
		Kafka:      kafka.DefaultConfig(),
	}
}

// Validate reports an unknown role or store scheme and bad sub-configurations.
func (c Config) Validate() error {
	switch c.Role {
	case "", RoleAll, RoleCommand, RoleProjector, RoleQuery:
	default:
		return fmt.Errorf("role %q: want all, command, projector or query", c.Role)
	}
	if isPostgres(c.Store) {
		if _, err := pgxpool.ParseConfig(c.Store); err != nil {
			return fmt.Errorf("store: %w", err) // pgx masks the password
		}
	} else if _, err := sqlitePath(c.Store); err != nil {
		return err
	}
	if c.Listen == "" && c.Role != RoleProjector {
		return fmt.Errorf("role %s needs a listen address", c.Role)
	}
	switch c.Bus {
	case "", BusStore:
	case BusKafka:
		if err := c.Kafka.Validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("bus %q: want store or kafka", c.Bus)
	}
	if err := c.OTLP.Validate(); err != nil {
		return err
	}
	return c.Projection.Validate()
}

// sqlitePath returns the path of a "sqlite:PATH" store.
func sqlitePath(store string) (string, error) {
	path, ok := strings.CutPrefix(store, "sqlite:")
	if !ok || path == "" {
		return "", fmt.Errorf("store %q: want sqlite:PATH, sqlite::memory: or postgres://...", store)
	}
	return path, nil
}

// redactStore returns store with the password of a PostgreSQL URL masked,
// for logs.
func redactStore(store string) string {
	if !isPostgres(store) {
		return store
	}
	u, err := url.Parse(store)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	return u.Redacted()
}

// isPostgres reports whether store is a PostgreSQL URL.
func isPostgres(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}
