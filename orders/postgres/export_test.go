package postgres

import (
	"context"

	"github.com/lagscope/lagscope/orders"
)

// SetBeforeCommit makes every Append of d call f inside its transaction, after
// the events are inserted (stored holds them with their positions) and before
// the commit.
func SetBeforeCommit(d *DB, f func(ctx context.Context, stored []orders.Event)) { d.beforeCommit = f }

// DisableAppendLock makes d append without the advisory lock, to show the
// position-gap bug the lock prevents.
func DisableAppendLock(d *DB) { d.serialize = false }

// AppendLockClass is the first key of the append advisory lock (pg_locks.classid).
const AppendLockClass = lockClassAppend
