package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/sqlite"
	"github.com/lagscope/lagscope/orders/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%q) error = %v", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	return db
}

func TestStore(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) orders.Store { return open(t, sqlite.Memory) })
	})
	t.Run("file", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) orders.Store { return open(t, filepath.Join(t.TempDir(), "orders.db")) })
	})
	t.Run("file shared by two handles", func(t *testing.T) {
		// Two DB values on one file stand in for two processes.
		storetest.Run(t, func(t *testing.T) orders.Store {
			path := filepath.Join(t.TempDir(), "orders.db")
			return twoHandles{DB: open(t, path), other: open(t, path)}
		})
	})
}

func TestViews(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		storetest.RunViews(t, func(t *testing.T) orders.Views { return open(t, sqlite.Memory) })
	})
	t.Run("file", func(t *testing.T) {
		storetest.RunViews(t, func(t *testing.T) orders.Views { return open(t, filepath.Join(t.TempDir(), "orders.db")) })
	})
}

// twoHandles appends through one handle and reads through the other, like a
// command process and a projector process sharing a file.
type twoHandles struct {
	*sqlite.DB
	other *sqlite.DB
}

func (h twoHandles) Load(ctx context.Context, id string) ([]orders.Event, error) {
	return h.other.Load(ctx, id)
}

func (h twoHandles) ReadAll(ctx context.Context, after int64, limit int) ([]orders.Event, error) {
	return h.other.ReadAll(ctx, after, limit)
}
