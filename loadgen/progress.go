package loadgen

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// plainEvery is how often a progress writer that is not a terminal gets a
// line.
const plainEvery = 10 * time.Second

// progress reports the spans sent to w: a bar on a terminal, plain lines
// elsewhere (a bar redrawn with carriage returns turns a log into one long
// line). Safe for concurrent use.
type progress struct {
	bar *progressbar.ProgressBar // nil when w is not a terminal

	w     io.Writer
	begin time.Time
	mu    sync.Mutex // guards the fields below
	n     int64
	next  time.Time // of the next plain line
}

// newProgress returns the progress of a run of max spans (-1: unknown) that
// begins now.
func newProgress(w io.Writer, max int64) *progress {
	now := time.Now()
	p := &progress{w: w, begin: now, next: now.Add(plainEvery)}
	if isTerminal(w) {
		p.bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("spans"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("spans"),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetSpinnerChangeInterval(0),
		)
	}
	return p
}

// add counts n more spans.
func (p *progress) add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(n)
	if now := time.Now(); !now.Before(p.next) {
		p.next = now.Add(plainEvery)
		p.line(now)
	}
}

// finish ends the bar, or writes the last plain line.
func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line(time.Now())
}

func (p *progress) line(now time.Time) {
	el := now.Sub(p.begin)
	fmt.Fprintf(p.w, "spans: %d in %s (%.0f/s)\n", p.n, el.Round(time.Second), float64(p.n)/max(el.Seconds(), 1e-9))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
