package analyzer

import (
	"context"
	"encoding/hex"
	"log/slog"
	"math/bits"
	"sync/atomic"
	"time"
)

// unprojLog writes a log line when a projection has not shown an event
// within the deadline, with the event's trace id (so that a server whose
// log handler links trace ids to a trace viewer, --web.trace-url-template,
// gives a click from the line to the trace), at most one line a second:
// a stalled projection makes thousands a second, and the count is in
// cqrs_events_unprojected_total. A line says how many it stands for.
// Safe for concurrent use.
type unprojLog struct {
	logger     *slog.Logger
	next       atomic.Int64 // Unix ns before which lines are suppressed
	suppressed atomic.Uint64
}

// unprojLogEvery is the least time between two lines.
const unprojLogEvery = int64(time.Second)

// note logs e, which the projections of missing did not show by now, or
// counts it as suppressed.
func (l *unprojLog) note(sh *joinShared, e *eventEntry, missing uint64, now int64) {
	if missing == 0 || l.logger == nil || !l.logger.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	n := l.next.Load()
	if now < n || !l.next.CompareAndSwap(n, now+unprojLogEvery) {
		l.suppressed.Add(1)
		return
	}
	names := make([]string, 0, bits.OnesCount64(missing))
	for b := missing; b != 0; b &= b - 1 {
		names = append(names, sh.projections.value(uint16(bits.TrailingZeros64(b))))
	}
	l.logger.Info("an event was not shown by its projections within the join deadline",
		"projections", names, "event_type", sh.types.value(e.typ),
		"trace_id", hex.EncodeToString(e.trace[:]), "similar_since_last_line", l.suppressed.Swap(0))
}
