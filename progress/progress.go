// Package progress shows how far a long run has come, for a person: a bar on
// a terminal, and plain periodic lines anywhere else (a bar redrawn with
// carriage returns turns a log file into one long line).
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// PlainEvery is how often a writer that is not a terminal gets a line.
const PlainEvery = 10 * time.Second

// Bar reports the items of a run to a writer. It is safe for concurrent use.
type Bar struct {
	bar  *progressbar.ProgressBar // nil when w is not a terminal
	unit string
	w    io.Writer

	begin time.Time
	mu    sync.Mutex // guards the fields below
	n     int64
	next  time.Time // of the next plain line
}

// New returns the progress of a run of max items (-1: unknown) that begins
// now, counting them as unit ("spans", "commands") and drawing at most every
// throttle on a terminal.
func New(w io.Writer, max int64, unit string, throttle time.Duration) *Bar {
	now := time.Now()
	p := &Bar{w: w, unit: unit, begin: now, next: now.Add(PlainEvery)}
	if IsTerminal(w) {
		p.bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(unit),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString(unit),
			progressbar.OptionThrottle(throttle),
			progressbar.OptionSetSpinnerChangeInterval(0),
		)
	}
	return p
}

// Add counts n more items.
func (p *Bar) Add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(n)
	if now := time.Now(); !now.Before(p.next) {
		p.next = now.Add(PlainEvery)
		p.line(now)
	}
}

// Finish ends the bar, or writes the last plain line.
func (p *Bar) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line(time.Now())
}

func (p *Bar) line(now time.Time) {
	el := now.Sub(p.begin)
	fmt.Fprintf(p.w, "%s: %d in %s (%.1f/s)\n", p.unit, p.n, el.Round(time.Second), float64(p.n)/max(el.Seconds(), 1e-9))
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
