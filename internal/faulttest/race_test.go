//go:build race

package faulttest

// raceEnabled reports whether the test binary was built with -race.
const raceEnabled = true
