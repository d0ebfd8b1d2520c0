package server

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// scrapeClock remembers when /metrics was scraped, so that shutdown can wait
// for one last scrape: the counts of the requests accepted since the previous
// scrape are otherwise in no scrape at all. It waits only when something has
// been scraping (two scrapes seen, which gives the interval), and for at most
// 1.5 intervals: a lagscope nobody scrapes, or a Ctrl-C in a terminal, does
// not wait at all.
type scrapeClock struct {
	mu       sync.Mutex
	last     time.Time
	interval time.Duration
	wake     chan struct{} // closed and replaced at every scrape
}

// wrap counts the scrapes h serves.
func (c *scrapeClock) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		c.scraped(time.Now())
	})
}

func (c *scrapeClock) scraped(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.last.IsZero() {
		c.interval = now.Sub(c.last)
	}
	c.last = now
	if c.wake != nil {
		close(c.wake)
	}
	c.wake = make(chan struct{})
}

// awaitFinal waits until a scrape completes after since, or 1.5 scrape
// intervals after the last one, or ctx ends; at once when there is no
// interval yet.
func (c *scrapeClock) awaitFinal(ctx context.Context, since time.Time) {
	for {
		c.mu.Lock()
		last, interval, wake := c.last, c.interval, c.wake
		c.mu.Unlock()
		if interval <= 0 || last.After(since) {
			return
		}
		wait := time.Until(last.Add(interval * 3 / 2))
		if wait <= 0 {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			return
		case <-wake:
			t.Stop()
		}
	}
}
