// Package pgtest gives tests a fresh, empty PostgreSQL schema of their own, so
// that tests run in parallel on one database and leave nothing behind.
//
// The database is the one named by the LAGSCOPE_TEST_POSTGRES environment
// variable, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable;
// tests that need it skip when it is unset.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvVar names the environment variable holding the test database's DSN.
const EnvVar = "LAGSCOPE_TEST_POSTGRES"

// DSN creates a schema with a random name, registers its removal (DROP
// SCHEMA ... CASCADE) with t.Cleanup, and returns the database DSN with
// search_path set to it. Register the cleanup of anything that connects with
// the DSN after calling DSN, so that it runs before the schema is dropped.
// It skips t when EnvVar is unset and fails it when the database cannot be
// reached.
func DSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvVar)
	if base == "" {
		t.Skip(EnvVar + " is not set: set it to a PostgreSQL URL (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run this test")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "lagscope_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", EnvVar, err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("connect to drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return WithSearchPath(base, schema)
}

// WithSearchPath returns dsn (a URL or a key=value string) with its
// search_path parameter set to schema.
func WithSearchPath(dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return dsn + " search_path=" + schema
}
