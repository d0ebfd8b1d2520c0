package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestPlainLines: off a terminal there is no bar (no carriage returns), and
// Finish writes the count.
func TestPlainLines(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, 100, "spans", 100*time.Millisecond)
	for range 10 {
		p.Add(5)
	}
	p.Finish()
	out := buf.String()
	if strings.ContainsAny(out, "\r\x1b") {
		t.Errorf("a bar drawn off a terminal: %q", out)
	}
	if !strings.HasPrefix(out, "spans: 50 in ") || strings.Count(out, "\n") != 1 {
		t.Errorf("got %q, want one line counting 50 spans", out)
	}
}
