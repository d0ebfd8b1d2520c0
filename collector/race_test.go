//go:build race

package collector

// raceEnabled reports whether the race detector is on: memory figures mean
// nothing under it.
const raceEnabled = true
