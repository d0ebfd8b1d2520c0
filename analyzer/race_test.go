//go:build race

package analyzer

// raceEnabled: the race detector slows everything down several times, so
// timing bounds are not checked under it.
const raceEnabled = true
