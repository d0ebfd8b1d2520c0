//go:build race

package main

// raceEnabled reports whether the race detector is on: it slows everything
// enough that a demo's lags are no longer what its faults inject.
const raceEnabled = true
