// Package alerts generates the Prometheus recording and alerting rules that
// watch lagscope's metrics: command-to-projection lag, projection stalls and
// drift, unprojected events, and lagscope's own health.
//
// The rules are built from Go with their thresholds as parameters (Config)
// and written as a Prometheus rule file by Generate. The file committed as
// lagscope-rules.yml is Generate(DefaultConfig()); a test keeps the two in
// step. The runbook for every alert is README.md in this directory.
package alerts

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lagscope/lagscope/analyzer"
)

// Config holds the thresholds of the generated rules. The zero value is not
// valid; start from DefaultConfig.
type Config struct {
	// LagThreshold is the command-to-projection lag above which
	// CQRSProjectionLagHigh fires, on either the p99 of completed lags or
	// the age of the oldest event a projection has not shown yet. A value
	// exactly at the threshold does not fire. Default 5s.
	LagThreshold time.Duration
	// LagBuckets are the classic bucket bounds, in seconds, of the lag
	// histogram lagscope exports (its metrics.lag_buckets), for Warnings:
	// where Prometheus reads the classic buckets, a threshold that is not
	// one of them is compared with an interpolated p99. Default nil: not
	// known, no warning.
	LagBuckets []float64
	// For is how long the lag must stay above LagThreshold before
	// CQRSProjectionLagHigh fires. Default 1m.
	For time.Duration
	// StallFor is how long a projection may project nothing while events of
	// its types are appended before CQRSProjectionStalled fires, and how
	// long its position lag may stay above 0 without decreasing while the
	// head moves before CQRSProjectionPositionStalled fires, and how long a
	// consumer group's committed offset may stand still on a partition whose
	// end offset moves before CQRSConsumerGroupStalled fires. Default 5m.
	StallFor time.Duration
	// UnprojectedFor is how long unprojected events must keep being counted
	// for a projection before CQRSEventsUnprojected fires. Default 1m.
	UnprojectedFor time.Duration
	// DriftTolerance is how far, as a fraction, the ratio of projected to
	// appended events of a projection's types may move from 1 before
	// CQRSProjectionDrift fires (0.1 means outside 0.9 to 1.1). Default 0.1.
	DriftTolerance float64
	// DriftFor is how long the drift must last before CQRSProjectionDrift
	// fires. Default 15m.
	DriftFor time.Duration
	// RejectRatio is the fraction of received spans lagscope may reject
	// before LagscopeRejectingSpans fires. Default 0.01.
	RejectRatio float64
	// StaleReadRatio is the fraction of a query's reads (those whose
	// freshness is known) that may be stale by more than StaleReadAfter
	// before CQRSStaleReads fires, for For. Default 0.01.
	StaleReadRatio float64
	// StaleReadAfter is the staleness from which a stale read counts
	// towards CQRSStaleReads: a read that missed a version appended this
	// long before it started. A read right after a write is often stale by
	// a few milliseconds in a healthy eventually consistent system; one that
	// misses a version a second old is what users notice. It must be a
	// bucket boundary of analyzer.StalenessBuckets. Default 1s.
	StaleReadAfter time.Duration
	// SelfFor is how long LagscopeRejectingSpans and LagscopeJoinEvictions
	// conditions must hold before they fire. Default 10m.
	SelfFor time.Duration
	// DownFor is how long lagscope may be unreachable (or absent from the
	// scrape targets) before LagscopeDown fires. Default 5m.
	DownFor time.Duration
	// Job is the Prometheus scrape job lagscope runs under, used by
	// LagscopeDown to notice a missing target. Default "lagscope".
	Job string
	// RunbookURL is the address of the runbook; each alert links to the
	// section named after it (lower case, as GitHub anchors headings).
	// Default "https://github.com/lagscope/lagscope/blob/main/alerts/README.md".
	RunbookURL string
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		LagThreshold:   5 * time.Second,
		For:            time.Minute,
		StallFor:       5 * time.Minute,
		UnprojectedFor: time.Minute,
		DriftTolerance: 0.1,
		DriftFor:       15 * time.Minute,
		RejectRatio:    0.01,
		StaleReadRatio: 0.01,
		StaleReadAfter: time.Second,
		SelfFor:        10 * time.Minute,
		DownFor:        5 * time.Minute,
		Job:            "lagscope",
		RunbookURL:     "https://github.com/lagscope/lagscope/blob/main/alerts/README.md",
	}
}

// Warnings returns what is valid in c but likely a mistake: a
// LagThreshold that is not one of LagBuckets.
func (c Config) Warnings() []string {
	if c.LagBuckets == nil {
		return nil
	}
	th := c.LagThreshold.Seconds()
	for _, b := range c.LagBuckets {
		// Durations are whole nanoseconds: a bound within half of one is it.
		if math.Abs(b-th) < 0.5e-9 {
			return nil
		}
	}
	return []string{fmt.Sprintf("lag threshold %s is not a bound of the classic lag buckets (%s): where Prometheus reads the classic buckets, the p99 CQRSProjectionLagHigh compares with it is interpolated between two bounds and may be far off; add %s to lagscope's metrics.lag_buckets and --lag-buckets",
		c.LagThreshold, formatBounds(c.LagBuckets), strconv.FormatFloat(th, 'g', -1, 64))}
}

func formatBounds(bounds []float64) string {
	parts := make([]string, len(bounds))
	for i, b := range bounds {
		parts[i] = strconv.FormatFloat(b, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

// Validate reports every setting that is out of range, naming it.
func (c Config) Validate() error {
	var errs []error
	if c.LagThreshold <= 0 {
		errs = append(errs, fmt.Errorf("lag threshold must be positive, got %s", c.LagThreshold))
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"for", c.For}, {"stall for", c.StallFor}, {"unprojected for", c.UnprojectedFor},
		{"drift for", c.DriftFor}, {"self for", c.SelfFor}, {"down for", c.DownFor},
	} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", d.name, d.d))
		}
	}
	if c.DriftTolerance <= 0 || c.DriftTolerance >= 1 {
		errs = append(errs, fmt.Errorf("drift tolerance must be between 0 and 1, got %g", c.DriftTolerance))
	}
	if c.RejectRatio < 0 || c.RejectRatio >= 1 {
		errs = append(errs, fmt.Errorf("reject ratio must be in [0, 1), got %g", c.RejectRatio))
	}
	if c.StaleReadRatio < 0 || c.StaleReadRatio >= 1 {
		errs = append(errs, fmt.Errorf("stale read ratio must be in [0, 1), got %g", c.StaleReadRatio))
	}
	if !slices.Contains(analyzer.StalenessBuckets, c.StaleReadAfter.Seconds()) {
		errs = append(errs, fmt.Errorf("stale read after must be a bucket boundary of cqrs_read_staleness_seconds (%v seconds), got %s", analyzer.StalenessBuckets, c.StaleReadAfter))
	}
	if c.Job == "" {
		errs = append(errs, errors.New("job must not be empty"))
	}
	if c.RunbookURL == "" {
		errs = append(errs, errors.New("runbook URL must not be empty"))
	}
	return errors.Join(errs...)
}
