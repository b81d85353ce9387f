//go:build !race

package input

// raceEnabled shrinks the large tests under the race detector, which slows parsing tenfold.
const raceEnabled = false
