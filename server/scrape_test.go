package server

import (
	"context"
	"testing"
	"time"
)

func TestScrapeClockAwaitFinal(t *testing.T) {
	tests := []struct {
		name     string
		scrapes  int           // scrapes before shutdown, interval apart
		interval time.Duration // between those scrapes
		final    time.Duration // a scrape this long after shutdown starts; 0: none
		min, max time.Duration // how long awaitFinal may take
	}{
		{name: "never scraped", min: 0, max: 200 * time.Millisecond},
		{name: "scraped once: no interval known", scrapes: 1, interval: time.Hour, final: time.Hour, min: 0, max: 200 * time.Millisecond},
		{name: "final scrape arrives", scrapes: 3, interval: time.Second, final: 100 * time.Millisecond,
			min: 90 * time.Millisecond, max: 1200 * time.Millisecond},
		{name: "final scrape never comes: 1.5 intervals", scrapes: 2, interval: 200 * time.Millisecond,
			min: 250 * time.Millisecond, max: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c scrapeClock
			base := time.Now().Add(-time.Duration(tt.scrapes) * tt.interval)
			for i := range tt.scrapes {
				c.scraped(base.Add(time.Duration(i+1) * tt.interval))
			}
			start := time.Now()
			if tt.final > 0 {
				time.AfterFunc(tt.final, func() { c.scraped(time.Now()) })
			}
			c.awaitFinal(context.Background(), start)
			if took := time.Since(start); took < tt.min || took > tt.max {
				t.Errorf("awaitFinal took %v, want between %v and %v", took, tt.min, tt.max)
			}
		})
	}
}

func TestScrapeClockAwaitFinalHonoursContext(t *testing.T) {
	var c scrapeClock
	now := time.Now()
	c.scraped(now.Add(-time.Hour))
	c.scraped(now) // an interval of an hour
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	c.awaitFinal(ctx, now.Add(time.Millisecond))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("awaitFinal took %v past its context", took)
	}
}
