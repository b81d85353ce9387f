//go:build !race

package main_test

// raceFlags builds the binary with the race detector when the tests run with it.
var raceFlags []string
